from edge_sdk.cli.main import main

main()
