import sys

from rnn_xframework.cli import main

sys.exit(main())
