# frozen_string_literal: true

require_relative "test_helper"

# Promotion policies from Ruby: a gate refusing a move (PolicyViolation, a Conflict, naming the
# failed requirement with the measured value), an admin's override, a bad policy (InvalidRequest
# naming the field) and the alias history.
class TestAliasPolicy < StorageTest
  def test_a_gate_refuses_a_move_and_the_history_shows_it
    s = storage
    good = s.store(program: { p: 1 }, metadata: { signature: "Gate", version: "1.0.0" })
    weak = s.store(program: { p: 2 }, metadata: { signature: "Gate", version: "1.1.0" })
    perf = DSPyStorage::PerformanceStorage.new(s)
    [0.95, 0.93].each { |v| perf.record_performance(good, { accuracy: v }, environment: { name: "eval" }) }
    [0.87, 0.878].each { |v| perf.record_performance(weak, { accuracy: v }, environment: { name: "eval" }) }
    assert_nil s.alias_policy("Gate", "production")
    policy = s.set_alias_policy("Gate", "production", protected: true,
                                                      require: { metric: "accuracy", min: 0.9, min_records: 2, window: "7d",
                                                                 environment: { name: "eval" } })
    assert_equal true, policy[:protected]
    assert_equal 2, policy[:require][:min_records]
    assert_equal policy[:rev], s.alias_policy("Gate", "production")[:rev]

    moved = s.set_alias("Gate", "production", "1.0.0")
    assert_equal true, moved[:history][:gate][:passed]
    error = assert_raises(DSPyStorage::PolicyViolation) { s.set_alias("Gate", "production", "1.1.0") }
    assert_kind_of DSPyStorage::Conflict, error
    assert_equal 409, error.status
    assert_equal "policy_violation", error.code
    assert_includes error.message, "accuracy mean 0.874 over 2 records in the last 7d with environment name=eval < min 0.9"
    assert_equal "1.0.0", s.load_alias("Gate", "production").version

    over = s.set_alias("Gate", "production", "1.1.0", override_reason: "hotfix, eval tomorrow")
    assert_equal "override", over[:history][:action]
    history = s.alias_history("Gate", "production")
    assert_equal %w[override refused move policy_set], history.map { |h| h[:action] }
    assert_equal "hotfix, eval tomorrow", history[0][:override_reason]
    assert_equal "1.1.0", history[1][:to_version]
    assert_equal 2, history[1][:gate][:records]
    assert_equal false, history[1][:gate][:passed]
    assert_equal %w[override], s.alias_history("Gate", "production", limit: 1).map { |h| h[:action] }

    assert s.remove_alias_policy("Gate", "production")
    assert_nil s.alias_policy("Gate", "production")
    assert_raises(DSPyStorage::NotFound) { s.remove_alias_policy("Gate", "production") }
    assert_equal "policy_removed", s.alias_history("Gate", "production").first[:action]
  end

  def test_a_bad_policy_is_an_invalid_request_naming_the_field
    s = storage
    s.store(program: { p: 1 }, metadata: { signature: "BadPolicy" })
    [[{ metric: "accuracy", min_records: -1 }, "require.min_records"],
     [{ metric: "acc uracy" }, "require.metric"],
     [{ metric: "accuracy", window: "a week" }, "require.window"]].each do |require, field|
      error = assert_raises(DSPyStorage::InvalidRequest) { s.set_alias_policy("BadPolicy", "production", require: require) }
      assert_equal field, error.field
    end
    assert_nil s.alias_policy("BadPolicy", "production")
    assert_empty s.alias_history("BadPolicy", "production")
  end
end
