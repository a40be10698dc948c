"""`python -m trio_echo.server`."""

from trio_echo.server.command import main

main()
