# frozen_string_literal: true

module DSPyStorage
  # DSPy.rb's documented StorageMonitor: the service's report.
  class StorageMonitor
    attr_reader :storage

    def initialize(storage = DSPyStorage.current)
      @storage = storage
    end

    # `{total_programs:, storage_size:, recent_activity:, top_signatures:, performance_trends:,
    # storage_health:}` from one GET /report (recent_activity: the last 7 days; storage_health: the
    # last backup and cleanup, orphan blobs and an integrity check of sampled programs).
    def generate_report
      report = @storage.report
      report.slice(:total_programs, :storage_size, :recent_activity, :top_signatures,
                   :performance_trends, :storage_health)
    end
  end
end
