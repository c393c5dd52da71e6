#!/usr/bin/env bash
# Runs one launched command on a TPU VM worker and records how it ended; used by
# `tpu_vm.py launch`, which starts it from ~/seqjax under nohup with its output in LOG.log:
#   bash tpu_scripts/run_logged.sh logs/NAME MAX_RESTARTS COMMAND ...
# `python` is the VM's python3 (setup links it into ~/seqjax/bin). A run that exits with 75
# (seqjax preempted by SIGTERM after saving a checkpoint) is started again, at most MAX_RESTARTS
# times: it resumes from its workdir. Every worker's run saves at the same step and exits 75 together
# (seqjax/preemption.py), so every worker restarts together. The last exit status goes to LOG.exit.
log="$1"
max_restarts="$2"
shift 2
export PATH="$HOME/seqjax/bin:$HOME/.local/bin:$PATH"
restarts=0
while true; do
  "$@"
  status=$?
  if [ "$status" -ne 75 ] || [ "$restarts" -ge "$max_restarts" ]; then
    break
  fi
  restarts=$((restarts + 1))
  echo "run_logged.sh: preempted (exit 75); starting again, restart $restarts of $max_restarts"
done
echo "$status" > "$log.exit"
exit "$status"
