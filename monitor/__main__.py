"""`python -m monitor ...`: the same commands as `netlogger monitor ...`."""

from monitor.cli import main

if __name__ == "__main__":
    main()
