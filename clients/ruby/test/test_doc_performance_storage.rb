# frozen_string_literal: true

require_relative "test_helper"

# DSPy.rb "Storage System", section "Performance Tracking Storage": the page's snippet is the class
#
#   class PerformanceStorage
#     def initialize(storage_backend)
#     def record_performance(program_id, metrics)      # {program_id:, timestamp:, metrics:, environment: capture_environment_info}
#     def get_performance_history(program_id, time_range: 30.days)
#     def analyze_performance_trends(program_id)        # {accuracy: {current:, trend:, change_30d:}, latency: ..., cost: ...}
#     private def capture_environment_info              # ruby_version, dspy_version, timestamp, hostname, git_commit
#
# Adaptations: "ActiveSupport replaced by plain Ruby" (`time_range: 30.days` → `30 * 86400`) and
# "default storage configured once" (DSPy::Storage::ProgramStorage.new).
class TestDocPerformanceStorage < StorageTest
  def test_performance_storage
    configure_default
    storage = DSPy::Storage::ProgramStorage.new
    program_id = storage.store(
      program: ClassifyTextPredictor.new(instruction: "Classify.").to_h,
      metadata: { signature: "ClassifyText", created_at: Time.now - 20 * DAY }
    )
    performance = DSPy::Storage::PerformanceStorage.new(storage)

    # record_performance(program_id, metrics): as on the page, now ...
    first = performance.record_performance(program_id, { accuracy: 0.9, latency: 1.2, cost: 0.003 })
    assert_equal 1, first[:recorded]
    # ... and backfilled over ten days (timestamp:), accuracy improving, latency falling.
    (1..10).each do |d|
      performance.record_performance(program_id, { accuracy: 0.70 + 0.015 * (10 - d), latency: 2.0 - 0.05 * (10 - d), cost: 0.004 },
                                     timestamp: Time.now - d * DAY)
    end

    # get_performance_history(program_id, time_range: 30.days)
    history = performance.get_performance_history(program_id, time_range: 30 * 86_400)
    raw = server.get("/programs/#{program_id}/metrics?#{q(from: iso(Time.now - 31 * DAY), limit: 1000)}")["records"]
    assert_equal 11, history.size
    assert_equal raw.map { |r| r["id"] }, history.map { |r| r[:id] }, "same records, oldest first"
    history.zip(raw).each do |mine, theirs|
      assert_time_equal theirs["timestamp"], mine[:timestamp]
      assert_equal theirs["metrics"].transform_keys(&:to_sym), mine[:metrics]
      assert_equal theirs["record_id"], mine[:record_id]
    end
    assert_equal first[:record_id], history.last[:record_id]
    # capture_environment_info, as the server keeps it.
    env = raw.last["environment"]
    assert_equal RUBY_VERSION, env["ruby_version"]
    assert_equal Socket.gethostname, env["hostname"]
    git = IO.popen(%w[git rev-parse HEAD], err: File::NULL, &:read).strip
    assert_equal(git.empty? ? nil : git, env["git_commit"])
    assert env.key?("dspy_version")
    refute_nil env["timestamp"]
    # A shorter range is the server's range.
    assert_equal 5, performance.get_performance_history(program_id, time_range: 5 * 86_400 - 60).size

    # analyze_performance_trends(program_id)
    trends = performance.analyze_performance_trends(program_id)
    theirs = server.get("/programs/#{program_id}/trends?days=90")["metrics"]
    assert_equal %i[accuracy cost latency], trends.keys.sort
    %i[accuracy latency cost].each do |metric|
      assert_equal theirs[metric.to_s]["current"], trends[metric][:current]
      assert_equal theirs[metric.to_s]["trend"], trends[metric][:trend].to_s
      assert_equal theirs[metric.to_s]["change_30d"], trends[metric][:change_30d]
    end
    assert_equal :improving, trends[:accuracy][:trend]
    assert_equal :improving, trends[:latency][:trend], "lower latency is better"

    # The page's own computation over this history (group by day, average) agrees with the service.
    metrics_over_time = history.group_by { |record| record[:timestamp].utc.to_date }
    %i[accuracy latency cost].each do |metric|
      metric_values = metrics_over_time.map do |date, records|
        avg_value = records.map { |r| r[:metrics][metric] }.compact.sum / records.size
        [date, avg_value]
      end.to_h
      assert_in_delta theirs[metric.to_s]["current"], metric_values.values.last, 1e-9
    end
  end

  # Appends carry a record id: the same record sent twice is stored once.
  def test_metric_append_is_idempotent
    s = storage
    id = s.store(program: { a: 1 }, metadata: { signature: "ClassifyText" })
    record = { metrics: { accuracy: 0.5 }, record_id: "run-42" }
    one = s.record_metrics(id, [record])
    two = s.record_metrics(id, [record])
    assert_equal 0, one[:already_recorded]
    assert_equal 1, two[:already_recorded]
    assert_equal one[:ids], two[:ids]
    assert_equal 1, server.get("/programs/#{id}/metrics")["records"].size
  end
end
