# frozen_string_literal: true

require "open3"
require "socket"

module DSPyStorage
  # DSPy.rb's documented PerformanceStorage: metric records per program, their history and trends,
  # computed by the service.
  class PerformanceStorage
    attr_reader :storage

    def initialize(storage_backend = DSPyStorage.current)
      @storage = storage_backend
    end

    # Appends one record of +metrics+ (`{accuracy: 0.91, latency: 1.2, cost: 0.003}`) with the
    # environment it was measured in (capture_environment_info, or +environment+ when given).
    # The record carries a record id, so a retried append is stored once. Answers
    # `{program_id:, record_id:, id:, recorded:, already_recorded:}`.
    def record_performance(program_id, metrics, timestamp: nil, environment: nil)
      record = { metrics: metrics, environment: environment || capture_environment_info }
      record[:timestamp] = timestamp if timestamp
      answer = @storage.record_metrics(program_id, [record])
      { program_id: answer[:program_id], record_id: answer[:record_ids].first, id: answer[:ids].first,
        recorded: answer[:recorded], already_recorded: answer[:already_recorded] }
    end

    # The records of the last +time_range+ seconds (or an ActiveSupport duration), oldest first;
    # each `{timestamp: Time, metrics: {accuracy: ...}, environment:, record_id:, received_at:, ...}`.
    def get_performance_history(program_id, time_range: 30 * 86_400)
      @storage.metrics_history(program_id, from: Time.now - Wire.seconds(time_range))
    end

    # Trends of every metric of the last +days+ days: `{accuracy: {current:, trend: :improving |
    # :declining | :stable, change_30d:, slope_per_day:, lower_is_better:, points:}, ...}` — daily
    # averages, a least-squares slope and its 30-day change, computed by the service.
    def analyze_performance_trends(program_id, days: 90)
      @storage.trends(program_id, days: days)[:metrics].transform_values do |m|
        m.merge(trend: m[:trend]&.to_sym)
      end
    end

    # The environment a measurement was taken in.
    def capture_environment_info
      PerformanceStorage.environment_info.merge(timestamp: Time.now.utc.iso8601(3))
    end

    def self.environment_info
      @environment_info ||= {
        ruby_version: RUBY_VERSION,
        dspy_version: defined?(::DSPy::VERSION) ? ::DSPy::VERSION : nil,
        dspy_storage_version: VERSION,
        hostname: Socket.gethostname,
        git_commit: git_commit
      }.freeze
    end

    def self.git_commit
      out, status = Open3.capture2("git", "rev-parse", "HEAD", err: File::NULL)
      status.success? ? out.strip : nil
    rescue SystemCallError
      nil
    end
  end
end
