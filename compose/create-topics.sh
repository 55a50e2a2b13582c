#!/usr/bin/env bash
# Creates every topic caep-engine uses, before any engine process starts (the one-shot `topics`
# service of compose.yaml, run in the apache/kafka image). Names and counts come from the same
# CAEP_* settings the engine reads (caep.env), so they cannot disagree. Existing topics are left
# alone (--if-not-exists): re-running is safe.
#
# Why not let the engine create them: faust creates its tables' changelogs and its leader topic
# with replication factor 1, and `caep worker` only sets cleanup.policy. Here every topic gets
# the cluster's replication factor, min.insync.replicas=2 (acks=all then survives one broker
# down) and the right cleanup policy. The changelogs must have exactly CAEP_TOPIC_PARTITIONS
# partitions, like the engine-input topic their tables are co-partitioned with.
set -euo pipefail

BOOTSTRAP=${CAEP_BOOTSTRAP:?CAEP_BOOTSTRAP must be set}
PARTITIONS=${CAEP_TOPIC_PARTITIONS:-4}
REPLICATION=${CAEP_TOPIC_REPLICATION_FACTOR:-1}
MIN_ISR=$(( REPLICATION >= 3 ? 2 : 1 ))
APP=${CAEP_APP_ID:-caep-engine}
KAFKA_TOPICS=${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}  # tests substitute a recorder

while read -r name partitions policy; do
  "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$name" --partitions "$partitions" --replication-factor "$REPLICATION" \
    --config "cleanup.policy=$policy" --config "min.insync.replicas=$MIN_ISR"
  echo "topic $name: $partitions partitions, replication $REPLICATION, min ISR $MIN_ISR, $policy"
done <<TOPICS
${CAEP_TOPIC_SECURITY_EVENTS:-caep.security-events} $PARTITIONS delete
${CAEP_TOPIC_SESSION_ACTIVITY:-caep.session-activity} $PARTITIONS delete
${CAEP_TOPIC_ENGINE_INPUT:-caep.engine-input} $PARTITIONS delete
${CAEP_TOPIC_DEVICE_INDEX:-caep.device-index} $PARTITIONS delete
${CAEP_TOPIC_DECISIONS:-caep.decisions} $PARTITIONS delete
${CAEP_TOPIC_FLAGS:-caep.flags} $PARTITIONS compact
${CAEP_TOPIC_DEAD_LETTER:-caep.dead-letter} $PARTITIONS delete
${CAEP_TOPIC_SSF_STREAMS:-caep.ssf-streams} $PARTITIONS compact
$APP-subjects-changelog $PARTITIONS compact
$APP-devices-changelog $PARTITIONS compact
$APP-taken-in-changelog $PARTITIONS compact
$APP-__assignor-__leader 1 delete
TOPICS
