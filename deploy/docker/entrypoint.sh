#!/bin/sh
# Entrypoint of the sparsetrain images (tini runs it; it execs the command).
#
# A Ray driver must run on a Ray node: ray.init(address="head:6379") looks for a raylet on its
# own machine. So when this container is about to serve the API against an existing cluster
# (RAY_ADDRESS or SPARSETRAIN_RAY_ADDRESS is host:port), it first joins that cluster as a node
# with no CPUs and no GPUs, which runs no training workers. It retries while the head is not up
# yet. Every other command (ray start ... --block, python, bash) runs unchanged, and so does
# serve without an address (the server then starts a Ray head inside this container).
#
#   JOIN_RAY_CLUSTER=0    skip the join (e.g. the container already runs on a Ray node)
#   JOIN_RAY_ARGS         extra `ray start` flags, e.g. --metrics-export-port=8080
#   JOIN_RAY_ATTEMPTS     how many times to try, 10 s apart (default 30)
set -eu

address="${SPARSETRAIN_RAY_ADDRESS:-${RAY_ADDRESS:-}}"

serves_api() {
    if [ "${1:-}" = "sparsetrain" ] && [ "${2:-}" = "serve" ]; then
        return 0
    fi
    case "${1:-}" in
        python | python3 | */python | */python3) ;;
        *) return 1 ;;
    esac
    [ "${2:-}" = "-m" ] && [ "${3:-}" = "sparsetrain.service" ] && [ "${4:-}" = "serve" ]
}

if serves_api "$@" && [ -n "$address" ] && [ "${JOIN_RAY_CLUSTER:-1}" != "0" ]; then
    case "$address" in
        ray://* | auto | local) ;; # Ray Client, or a cluster on this machine: nothing to join
        *)
            attempts="${JOIN_RAY_ATTEMPTS:-30}"
            tries=1
            # JOIN_RAY_ARGS is a list of flags, split on purpose.
            # shellcheck disable=SC2086
            until ray start --address="$address" --num-cpus=0 --num-gpus=0 \
                --disable-usage-stats ${JOIN_RAY_ARGS:-}; do
                if [ "$tries" -ge "$attempts" ]; then
                    echo "sparsetrain: could not join the Ray cluster at $address ($tries tries)" >&2
                    exit 1
                fi
                tries=$((tries + 1))
                echo "sparsetrain: Ray cluster at $address not reachable yet, retrying in 10 s" >&2
                sleep 10
            done
            ;;
    esac
fi

exec "$@"
