from patchkit.cli.app import main

main()
