from animlcm.cli import main

main()
