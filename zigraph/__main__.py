from zigraph.cli import main

raise SystemExit(main())
