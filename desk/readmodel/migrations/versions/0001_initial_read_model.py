"""The initial read model: state, public topics, desk actions, offsets.

Revision ID: 0001
Revises: (none)
Create Date: 2026-12-01 22:10:50.694253
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "acks",
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("command_id", sa.String(length=128), nullable=False),
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("system", sa.String(length=63), nullable=False),
        sa.Column("outcome", sa.String(length=63), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("export_reference", sa.Text(), nullable=True),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("partition", "offset", name=op.f("pk_acks")),
    )
    op.create_index(op.f("ix_acks_acked_at"), "acks", ["acked_at"], unique=False)
    op.create_index(op.f("ix_acks_command_id"), "acks", ["command_id"], unique=False)
    op.create_index(op.f("ix_acks_subject_id"), "acks", ["subject_id"], unique=False)
    op.create_table(
        "audit",
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("audit_id", sa.String(length=128), nullable=False),
        sa.Column("subject_ref", sa.String(length=64), nullable=False),
        sa.Column("controller_id", sa.String(length=63), nullable=False),
        sa.Column("rule_id", sa.String(length=1000), nullable=False),
        sa.Column("policy_version", sa.String(length=1000), nullable=False),
        sa.Column("decision", sa.String(length=63), nullable=False),
        sa.Column("event_ids_in", sa.Text(), nullable=True),
        sa.Column("command_ids_out", sa.Text(), nullable=True),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("partition", "sequence", name=op.f("pk_audit")),
    )
    op.create_index(
        op.f("ix_audit_decision_decided_at"), "audit", ["decision", "decided_at"], unique=False
    )
    op.create_index(
        op.f("ix_audit_subject_ref_decided_at"),
        "audit",
        ["subject_ref", "decided_at"],
        unique=False,
    )
    op.create_table(
        "audit_chains",
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("checked", sa.BigInteger(), nullable=False),
        sa.Column("duplicates", sa.BigInteger(), nullable=False),
        sa.Column("head_sequence", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("broken_offset", sa.BigInteger(), nullable=True),
        sa.Column("broken_sequence", sa.BigInteger(), nullable=True),
        sa.Column("broken_reason", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("partition", name=op.f("pk_audit_chains")),
    )
    op.create_table(
        "commands",
        sa.Column("command_id", sa.String(length=128), nullable=False),
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("target_system", sa.String(length=63), nullable=False),
        sa.Column("action", sa.String(length=63), nullable=False),
        sa.Column("rule_id", sa.String(length=1000), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("record_ids", sa.Text(), nullable=True),
        sa.Column("categories", sa.Text(), nullable=True),
        sa.Column("first_issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("command_id", name=op.f("pk_commands")),
    )
    op.create_index(op.f("ix_commands_issued_at"), "commands", ["issued_at"], unique=False)
    op.create_index(op.f("ix_commands_subject_id"), "commands", ["subject_id"], unique=False)
    op.create_table(
        "consents",
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("purpose", sa.String(length=63), nullable=False),
        sa.Column("given_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("subject_id", "purpose", name=op.f("pk_consents")),
    )
    op.create_table(
        "dead_letters",
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("source_topic", sa.String(length=249), nullable=False),
        sa.Column("source_partition", sa.Integer(), nullable=False),
        sa.Column("source_offset", sa.BigInteger(), nullable=False),
        sa.Column("reason_class", sa.String(length=63), nullable=False),
        sa.Column("failure_class", sa.String(length=63), nullable=True),
        sa.Column("subject_id", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("partition", "offset", name=op.f("pk_dead_letters")),
    )
    op.create_index(op.f("ix_dead_letters_failed_at"), "dead_letters", ["failed_at"], unique=False)
    op.create_index(
        op.f("ix_dead_letters_subject_id"), "dead_letters", ["subject_id"], unique=False
    )
    op.create_table(
        "desk_actions",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=63), nullable=False),
        sa.Column("subject_id", sa.String(length=128), nullable=True),
        sa.Column("subject_ref", sa.String(length=64), nullable=False),
        sa.Column("target_id", sa.String(length=128), nullable=True),
        sa.Column("actor", sa.String(length=1000), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision", sa.String(length=63), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_desk_actions")),
    )
    op.create_index(
        op.f("ix_desk_actions_subject_id_published_at"),
        "desk_actions",
        ["subject_id", "published_at"],
        unique=False,
    )
    op.create_table(
        "forgotten",
        sa.Column("subject_ref", sa.String(length=64), nullable=False),
        sa.Column("forgotten_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject_ref", name=op.f("pk_forgotten")),
    )
    op.create_table(
        "holds",
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("hold_id", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("case_reference", sa.Text(), nullable=False),
        sa.Column("categories", sa.Text(), nullable=True),
        sa.Column("record_ids", sa.Text(), nullable=True),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("controller_id", sa.String(length=63), nullable=False),
        sa.PrimaryKeyConstraint("subject_id", "hold_id", name=op.f("pk_holds")),
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(length=63), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_meta")),
    )
    op.create_table(
        "offsets",
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", name=op.f("pk_offsets")),
    )
    op.create_table(
        "outstanding",
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("command_id", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=63), nullable=False),
        sa.Column("target_system", sa.String(length=63), nullable=False),
        sa.Column("rule_id", sa.String(length=1000), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.Column("record_ids", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("subject_id", "command_id", name=op.f("pk_outstanding")),
    )
    op.create_index(
        op.f("ix_outstanding_escalated_target_system"),
        "outstanding",
        ["escalated", "target_system"],
        unique=False,
    )
    op.create_table(
        "records",
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("system", sa.String(length=63), nullable=False),
        sa.Column("record_id", sa.String(length=128), nullable=False),
        sa.Column("category", sa.String(length=63), nullable=False),
        sa.Column("legal_basis", sa.String(length=63), nullable=False),
        sa.Column("source", sa.String(length=63), nullable=False),
        sa.Column("purpose", sa.String(length=63), nullable=False),
        sa.Column("controller_id", sa.String(length=63), nullable=False),
        sa.Column("contract_id", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=63), nullable=False),
        sa.Column("rule_id", sa.String(length=1000), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("held_by", sa.Text(), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("command_id", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("subject_id", "system", "record_id", name=op.f("pk_records")),
    )
    op.create_table(
        "requests",
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("request_type", sa.String(length=63), nullable=False),
        sa.Column("status", sa.String(length=63), nullable=False),
        sa.Column("controller_id", sa.String(length=63), nullable=False),
        sa.Column("is_open", sa.Boolean(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("provisional_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("awaiting_identity", sa.Boolean(), nullable=False),
        sa.Column("extended_months", sa.Integer(), nullable=False),
        sa.Column("missing_evidence", sa.Text(), nullable=True),
        sa.Column("evidence", sa.Text(), nullable=True),
        sa.Column("pending_commands", sa.Integer(), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("subject_id", "request_id", name=op.f("pk_requests")),
    )
    op.create_index(
        op.f("ix_requests_is_open_due_at_received_at"),
        "requests",
        ["is_open", "due_at", "received_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_requests_is_open_request_type_due_at"),
        "requests",
        ["is_open", "request_type", "due_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_requests_is_open_status_due_at"),
        "requests",
        ["is_open", "status", "due_at"],
        unique=False,
    )
    op.create_index(op.f("ix_requests_request_id"), "requests", ["request_id"], unique=False)
    op.create_table(
        "responses",
        sa.Column("response_id", sa.String(length=128), nullable=False),
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("request_type", sa.String(length=63), nullable=False),
        sa.Column("status", sa.String(length=63), nullable=False),
        sa.Column("controller_id", sa.String(length=63), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=True),
        sa.Column("missing_evidence", sa.Text(), nullable=True),
        sa.Column("kept", sa.Text(), nullable=True),
        sa.Column("body_json", sa.Text(), nullable=True),
        sa.Column("body_forgotten", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("response_id", name=op.f("pk_responses")),
    )
    op.create_index(op.f("ix_responses_issued_at"), "responses", ["issued_at"], unique=False)
    op.create_index(op.f("ix_responses_request_id"), "responses", ["request_id"], unique=False)
    op.create_index(
        op.f("ix_responses_subject_id_request_id_issued_at"),
        "responses",
        ["subject_id", "request_id", "issued_at"],
        unique=False,
    )
    op.create_table(
        "subjects",
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("restricted", sa.Boolean(), nullable=False),
        sa.Column("suppressed_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("suppression_channels", sa.Text(), nullable=True),
        sa.Column("projected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject_id", name=op.f("pk_subjects")),
    )
    op.create_table(
        "unreadable",
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", "offset", name=op.f("pk_unreadable")),
    )


def downgrade() -> None:
    op.drop_table("unreadable")
    op.drop_table("subjects")
    op.drop_index(op.f("ix_responses_subject_id_request_id_issued_at"), table_name="responses")
    op.drop_index(op.f("ix_responses_request_id"), table_name="responses")
    op.drop_index(op.f("ix_responses_issued_at"), table_name="responses")
    op.drop_table("responses")
    op.drop_index(op.f("ix_requests_request_id"), table_name="requests")
    op.drop_index(op.f("ix_requests_is_open_status_due_at"), table_name="requests")
    op.drop_index(op.f("ix_requests_is_open_request_type_due_at"), table_name="requests")
    op.drop_index(op.f("ix_requests_is_open_due_at_received_at"), table_name="requests")
    op.drop_table("requests")
    op.drop_table("records")
    op.drop_index(op.f("ix_outstanding_escalated_target_system"), table_name="outstanding")
    op.drop_table("outstanding")
    op.drop_table("offsets")
    op.drop_table("meta")
    op.drop_table("holds")
    op.drop_table("forgotten")
    op.drop_index(op.f("ix_desk_actions_subject_id_published_at"), table_name="desk_actions")
    op.drop_table("desk_actions")
    op.drop_index(op.f("ix_dead_letters_subject_id"), table_name="dead_letters")
    op.drop_index(op.f("ix_dead_letters_failed_at"), table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_table("consents")
    op.drop_index(op.f("ix_commands_subject_id"), table_name="commands")
    op.drop_index(op.f("ix_commands_issued_at"), table_name="commands")
    op.drop_table("commands")
    op.drop_table("audit_chains")
    op.drop_index(op.f("ix_audit_subject_ref_decided_at"), table_name="audit")
    op.drop_index(op.f("ix_audit_decision_decided_at"), table_name="audit")
    op.drop_table("audit")
    op.drop_index(op.f("ix_acks_subject_id"), table_name="acks")
    op.drop_index(op.f("ix_acks_command_id"), table_name="acks")
    op.drop_index(op.f("ix_acks_acked_at"), table_name="acks")
    op.drop_table("acks")
