#!/usr/bin/env bash
# Kafka ACLs for the data-lifecycle pipeline (see deploy/kafka-acls.md for the reasoning).
#
#   BOOTSTRAP=broker:9093 COMMAND_CONFIG=admin.properties deploy/kafka-acls.sh
#   DRY_RUN=1 deploy/kafka-acls.sh          # print the kafka-acls.sh commands only
#
# Environment:
#   BOOTSTRAP           bootstrap servers of the cluster (required unless DRY_RUN=1)
#   COMMAND_CONFIG      admin client properties (SASL/TLS of a principal allowed to alter ACLs)
#   KAFKA_ACLS          path to kafka-acls.sh (default: kafka-acls.sh on PATH)
#   PREFIX              topic prefix, LIFECYCLE_TOPIC_PREFIX (default: lifecycle)
#   APP_ID              Faust app id / consumer group, LIFECYCLE_APP_ID (default: data-lifecycle)
#   PRODUCING_SYSTEMS   systems that publish events (default: streams/topics.py PRODUCING_SYSTEMS)
#   DOWNSTREAM_SYSTEMS  systems that receive commands (default: agents/policy/notice.yaml systems)
#   WORKER_PRINCIPAL, TOPIC_ADMIN_PRINCIPAL, AUDITOR_PRINCIPAL, REPLAYER_PRINCIPAL: principal names
#   (producers are User:producer-<system>, downstream consumers User:downstream-<system>)
set -euo pipefail

PREFIX="${PREFIX:-lifecycle}"
APP_ID="${APP_ID:-data-lifecycle}"
PRODUCING_SYSTEMS="${PRODUCING_SYSTEMS:-telephony billing crm marketing web-analytics privacy-desk}"
DOWNSTREAM_SYSTEMS="${DOWNSTREAM_SYSTEMS:-call-recorder telephony-switch billing-db crm marketing-platform web-analytics data-warehouse intl-numbers-processor}"
WORKER_PRINCIPAL="${WORKER_PRINCIPAL:-User:lifecycle-worker}"
TOPIC_ADMIN_PRINCIPAL="${TOPIC_ADMIN_PRINCIPAL:-User:lifecycle-topic-admin}"
AUDITOR_PRINCIPAL="${AUDITOR_PRINCIPAL:-User:lifecycle-auditor}"
REPLAYER_PRINCIPAL="${REPLAYER_PRINCIPAL:-User:lifecycle-replayer}"
KAFKA_ACLS="${KAFKA_ACLS:-kafka-acls.sh}"
DRY_RUN="${DRY_RUN:-0}"

if [[ "$DRY_RUN" != "1" && -z "${BOOTSTRAP:-}" ]]; then
  echo "error: set BOOTSTRAP (and COMMAND_CONFIG), or DRY_RUN=1 to print the commands" >&2
  exit 2
fi

acl() {
  # acl <principal> <operations...> -- <resource options...>
  local principal="$1"
  shift
  local ops=()
  while [[ "$1" != "--" ]]; do
    ops+=(--operation "$1")
    shift
  done
  shift
  local cmd=("$KAFKA_ACLS" --bootstrap-server "${BOOTSTRAP:-BOOTSTRAP}")
  if [[ -n "${COMMAND_CONFIG:-}" ]]; then
    cmd+=(--command-config "$COMMAND_CONFIG")
  fi
  cmd+=(--add --allow-principal "$principal" "${ops[@]}" "$@")
  if [[ "$DRY_RUN" == "1" ]]; then
    printf '%s\n' "${cmd[*]}"
  else
    "${cmd[@]}"
  fi
}

# 1. Producers: each system writes only its own input topic.
for system in $PRODUCING_SYSTEMS; do
  acl "User:producer-${system}" Write Describe -- --topic "${PREFIX}.in.${system}"
done

# 2. Downstream systems: read only their own command topic (in their own group),
#    write acknowledgements.
for system in $DOWNSTREAM_SYSTEMS; do
  principal="User:downstream-${system}"
  acl "$principal" Read Describe -- --topic "${PREFIX}.cmd.${system}"
  acl "$principal" Read -- --group "${PREFIX}.downstream.${system}"
  acl "$principal" Write Describe -- --topic "${PREFIX}.acks"
  # Announces a restore from backup (SystemRestored): its erasures are re-sent.
  acl "$principal" Write Describe -- --topic "${PREFIX}.restores"
done

# 3. The worker: reads every pipeline topic, writes commands and the internal topics,
#    owns Faust's own topics (changelogs, leader topic) and its consumer group.
acl "$WORKER_PRINCIPAL" Read Describe DescribeConfigs -- --topic "${PREFIX}." --resource-pattern-type prefixed
acl "$WORKER_PRINCIPAL" Write -- --topic "${PREFIX}.cmd." --resource-pattern-type prefixed
for topic in ticks audit responses dead-letter erasure-ledger; do
  acl "$WORKER_PRINCIPAL" Write -- --topic "${PREFIX}.${topic}"
done
acl "$WORKER_PRINCIPAL" All -- --topic "${APP_ID}-" --resource-pattern-type prefixed
acl "$WORKER_PRINCIPAL" Read -- --group "${APP_ID}"
#    The audit chain's transactional producers, one id per partition (<app>.audit.<n>):
#    only the worker may take one over (and so fence the previous owner).
acl "$WORKER_PRINCIPAL" Write Describe -- --transactional-id "${APP_ID}.audit." --resource-pattern-type prefixed

# 3b. The erasure replayer (lifecycle erasures listen/replay): reads the erasure
#     ledger and restore events, sends ledger entries back to the worker, parks
#     what it cannot read. Groups: its listener's, and throwaway ledger readers.
acl "$REPLAYER_PRINCIPAL" Read Describe -- --topic "${PREFIX}.erasure-ledger"
acl "$REPLAYER_PRINCIPAL" Read Describe -- --topic "${PREFIX}.restores"
acl "$REPLAYER_PRINCIPAL" Read -- --group "${PREFIX}.erasure-replayer"
acl "$REPLAYER_PRINCIPAL" Read -- --group "${PREFIX}.ledger-read." --resource-pattern-type prefixed
acl "$REPLAYER_PRINCIPAL" Write Describe -- --topic "${PREFIX}.erasure-replays"
acl "$REPLAYER_PRINCIPAL" Write Describe -- --topic "${PREFIX}.dead-letter"

# 4. Topic creation job: creates and configures the pipeline's topics, nothing else.
acl "$TOPIC_ADMIN_PRINCIPAL" Create Describe DescribeConfigs AlterConfigs -- \
  --topic "${PREFIX}." --resource-pattern-type prefixed

# 5. Read-only audit access for the privacy desk / DPO reporting (no HMAC key).
acl "$AUDITOR_PRINCIPAL" Read Describe -- --topic "${PREFIX}.audit"
acl "$AUDITOR_PRINCIPAL" Read -- --group "${PREFIX}.auditor" --resource-pattern-type prefixed
