"""``python -m app``: serve (``app.serve``); ``python -m app db upgrade``: run the database
migrations; ``python -m app user add NAME --role reviewer|admin`` (password on standard
input) and ``python -m app user delete NAME``: reviewer accounts."""

import sys

from app.serve import main

if __name__ == "__main__":
    if len(sys.argv) > 1:
        from app.admin_cli import main as admin_main

        sys.exit(admin_main(sys.argv[1:]))
    main()
