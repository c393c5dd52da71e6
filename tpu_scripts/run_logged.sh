#!/usr/bin/env bash
# Runs one launched command on a TPU VM worker and records how it ended; used by
# `tpu_vm.py launch`, which starts it from ~/seqjax under nohup with its output in LOG.log:
#   bash tpu_scripts/run_logged.sh logs/NAME COMMAND ...
# `python` is the VM's python3 (setup links it into ~/seqjax/bin); the exit status goes to LOG.exit.
log="$1"
shift
export PATH="$HOME/seqjax/bin:$HOME/.local/bin:$PATH"
"$@"
status=$?
echo "$status" > "$log.exit"
exit "$status"
