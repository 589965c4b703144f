from tuner_service.cli import main

raise SystemExit(main())
