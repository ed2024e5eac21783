from tdxcheck.checker.cli import main

raise SystemExit(main())
