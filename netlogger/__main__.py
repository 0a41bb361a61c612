from netlogger.cli import main

main()
