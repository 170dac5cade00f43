from fetchml.cli.main import main

# Guarded: a multiprocessing child started with "spawn" imports __main__ again.
if __name__ == "__main__":
    main()
