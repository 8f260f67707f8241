from nodeguard.cli import main

main()
