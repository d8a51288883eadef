"""``python -m services.console``: run the console (the same as ``conduit console``)."""

from services.console.main import main

if __name__ == "__main__":
    main()
