#!/usr/bin/env bash
# Make sure Redis (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672) answer:
# install them from Debian's packages when missing, start them when stopped.
set -euo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

need_apt_update=1
apt_install() {
  if [ "$need_apt_update" = 1 ]; then apt-get update -qq; need_apt_update=0; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! answers 6379; then
  command -v redis-server >/dev/null || apt_install redis-server
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 50); do answers 6379 && break; sleep 0.1; done
fi
answers 6379 || { echo "Redis did not start on 127.0.0.1:6379" >&2; exit 2; }

if ! answers 5672; then
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  rabbitmq-server -detached
  for _ in $(seq 120); do answers 5672 && break; sleep 0.5; done
  rabbitmqctl await_startup >/dev/null 2>&1 || true
fi
answers 5672 || { echo "RabbitMQ did not start on 127.0.0.1:5672" >&2; exit 2; }
