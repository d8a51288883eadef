"""``python -m services.auth_proxy``: run the proxy (the same as ``conduit proxy``)."""

from services.auth_proxy.main import main

if __name__ == "__main__":
    main()
