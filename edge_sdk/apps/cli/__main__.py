from edge_sdk.apps.cli.main import main

main()
