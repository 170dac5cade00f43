from fetchml.cli.main import main

main()
