from gwctl.cli import main

raise SystemExit(main())
