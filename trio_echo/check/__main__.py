"""`python -m trio_echo.check`."""

from trio_echo.check.command import main

main()
