from missive.cli import main

main()
