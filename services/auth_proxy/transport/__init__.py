"""The proxy's own HTTP/1.1 transport on aiohttp's parser and protocols; private members only via aiohttp_private."""
