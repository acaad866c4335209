# Shell functions the bench scripts share; sourced, not run (`source "$ROOT/bench/lib.sh"`).

# The median of the numbers given as arguments (the mean of the middle two for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# User + system CPU clock ticks of a process or thread so far, from its /proc folder ($1: /proc/PID or
# /proc/PID/task/TID).
cpu_ticks() { awk '{print $14 + $15}' "$1/stat"; }

# CPU clock ticks ($1) spread over $2 instances, in milliseconds per instance.
CLK_TCK=$(getconf CLK_TCK)
ms_per_instance() { echo "$1 * 1000 / $CLK_TCK / $2" | bc -l; }

# Run the calling script again inside a private network namespace (loopback only) where the kernel
# allows it, because storescp 3.6.7 cannot be told to bind 127.0.0.1; otherwise warn and go on in
# the host namespace. $1 names the variable that marks the second run; pass the script's own
# arguments after it: `in_private_netns _MY_SCRIPT_IN_NETNS "$@"`.
in_private_netns() {
    local guard=$1
    shift
    [[ -z "${!guard:-}" ]] || return 0
    export "$guard=1"
    if unshare -n true 2>/dev/null; then
        exec unshare -n bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "$@"
    fi
    echo "warning: no private network namespace; storescp will listen on 0.0.0.0" >&2
}
