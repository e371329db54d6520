from freqfleet.cli import main

main()
