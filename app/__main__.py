"""``python -m app``: see ``app.serve``."""

from app.serve import main

if __name__ == "__main__":
    main()
