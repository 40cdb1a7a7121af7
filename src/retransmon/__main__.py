from retransmon.cli import main

raise SystemExit(main())
