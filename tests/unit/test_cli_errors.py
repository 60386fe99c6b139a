"""CLI failures are usage errors or clear messages with their own exit status, never tracebacks."""

from click.testing import CliRunner

from orchestration.cli import cli


def test_a_time_that_is_not_iso_8601_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(
        cli, ["replay", "--start", "yesterday"], env={"PULSE_DATA_DIR": str(tmp_path)}
    )
    assert result.exit_code == 2
    assert "'yesterday' is not an ISO 8601 time" in result.output


def test_reconcile_without_redis_says_so_and_exits_2_not_1(tmp_path):
    """Exit status 1 means drift (DESIGN.md); a reconciliation that could not run is 2."""
    env = {"PULSE_DATA_DIR": str(tmp_path), "PULSE_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = CliRunner().invoke(cli, ["reconcile", "--json"], env=env)
    assert result.exit_code == 2
    assert "cannot reach Redis" in result.output
    unconfigured = CliRunner().invoke(
        cli, ["reconcile", "--json"], env={"PULSE_DATA_DIR": str(tmp_path), "PULSE_REDIS_URL": ""}
    )
    assert unconfigured.exit_code == 2 and "No redis url configured" in unconfigured.output


def test_rebuild_wants_ids_or_all_and_says_so_without_redis(tmp_path):
    env = {"PULSE_DATA_DIR": str(tmp_path), "PULSE_REDIS_URL": "redis://127.0.0.1:1/0"}
    for args in (["rebuild"], ["rebuild", "--all", "u1"]):
        result = CliRunner().invoke(cli, args, env=env)
        assert result.exit_code == 2 and "or give --all, not both" in result.output
    unreachable = CliRunner().invoke(cli, ["rebuild", "u1"], env={**env, "PULSE_KAFKA_BROKERS": ""})
    assert unreachable.exit_code == 2 and "cannot reach Redis" in unreachable.output
