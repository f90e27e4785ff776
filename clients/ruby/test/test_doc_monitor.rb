# frozen_string_literal: true

require_relative "test_helper"

# DSPy.rb "Storage System", section "Monitor Storage Usage" (page text, verbatim):
#
#   class StorageMonitor
#     def generate_report
#       storage = DSPy::Storage.current
#       {
#         total_programs: storage.count_programs,
#         storage_size: storage.total_size,
#         recent_activity: storage.recent_activity(7.days),
#         top_signatures: storage.top_signatures_by_usage,
#         performance_trends: storage.performance_trends,
#         storage_health: assess_storage_health
#       }
#     end
#   end
#
# Adaptations: "DSPy::Storage.current / argument-less constructors take the default storage
# configured once" (StorageMonitor.new, DSPy::Storage.current) and "ActiveSupport replaced by
# plain Ruby" (`7.days` → `7 * 86400`). The report covers the whole store: a server of its own.
class TestDocMonitor < StorageTest
  def self.own_server?
    true
  end

  def test_storage_monitor
    configure_default
    storage = DSPy::Storage.current
    sizes = [0, 1, 2].map do |i|
      id = storage.store(program: ClassifyTextPredictor.new(instruction: "v#{i}" * (i + 1)).to_h,
                         metadata: { signature: "ClassifyText", performance: 0.8 + i / 100.0 })
      DSPy::Storage::PerformanceStorage.new(storage).record_performance(id, { accuracy: 0.8 + i / 100.0 })
      storage.load(id)
      raw_metadata(id)["size"]
    end
    storage.store(program: { other: true }, metadata: { signature: "Other" })
    sizes << server.get("/signatures/Other/versions?#{q(project: @project)}")["versions"].first["size"]

    # --- the page ---
    report = DSPy::Storage::StorageMonitor.new.generate_report
    # --- end of the page ---

    raw = server.get("/report")
    assert_equal %i[total_programs storage_size recent_activity top_signatures performance_trends storage_health], report.keys
    assert_equal raw["total_programs"], report[:total_programs]
    assert_equal 4, report[:total_programs]
    assert_equal raw["storage_size"], report[:storage_size]
    assert_equal sizes.sum, report[:storage_size]
    assert_equal JSON.parse(JSON.generate(raw["recent_activity"]), symbolize_names: true), report[:recent_activity]
    assert_equal 4, report[:recent_activity][:programs_stored]
    assert_equal 3, report[:recent_activity][:metric_records]
    assert_equal raw["top_signatures"]["by_programs"].map { |s| [s["signature"], s["programs"]] },
                 report[:top_signatures][:by_programs].map { |s| [s[:signature], s[:programs]] }
    assert_equal [["ClassifyText", 3], ["Other", 1]], report[:top_signatures][:by_programs].map { |s| [s[:signature], s[:programs]] }
    assert_equal raw["performance_trends"].map { |t| [t["signature"], t["records"]] },
                 report[:performance_trends].map { |t| [t[:signature], t[:records]] }
    health = report[:storage_health]
    assert_equal raw["storage_health"]["integrity_check"]["failed"], health[:integrity_check][:failed]
    assert_equal 0, health[:integrity_check][:failed]

    # The storage's own methods that the page calls, one by one, against the server's report.
    assert_equal 4, storage.count_programs
    assert_equal sizes.sum, storage.total_size
    activity = storage.recent_activity(7 * 86_400)
    assert_equal raw["recent_activity"]["programs_stored"], activity[:programs_stored]
    assert_equal raw["recent_activity"]["metric_records"], activity[:metric_records]
    assert_equal 1, storage.recent_activity(3600)[:by_day].size, "one hour = today"
    assert_raises(ArgumentError) { storage.recent_activity(30 * 86_400) }
    top = storage.top_signatures_by_usage
    assert_equal server.get("/report")["top_signatures"]["by_loads"].map { |s| [s["signature"], s["loads"]] },
                 top.map { |s| [s[:signature], s[:loads]] }
    assert_equal "ClassifyText", top.first[:signature], "three loads"
    trends = storage.performance_trends
    assert_equal ["ClassifyText", "Other"], trends.map { |t| t[:signature] }
    assert_equal 3, trends.first[:records]
  end
end
