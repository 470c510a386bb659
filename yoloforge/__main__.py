from yoloforge.cli import main

raise SystemExit(main())
