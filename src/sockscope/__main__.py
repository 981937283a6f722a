from sockscope.cli.main import main

raise SystemExit(main())
