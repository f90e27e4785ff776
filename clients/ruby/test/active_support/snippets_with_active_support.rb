# frozen_string_literal: true

# Run by test_active_support.rb in a process of its own (ActiveSupport changes core classes): the
# snippets' ActiveSupport helpers (`30.days`, `1.week.ago`, `90.days`, `1.year`, `7.days`,
# `Time.current`) exactly as on the page, against the parent's server; each answer must equal the
# plain-Ruby form's that the other tests run.
require "active_support/all"
require_relative "../test_helper"

class TestSnippetsWithActiveSupport < StorageTest
  def test_the_page_s_durations_and_times
    configure_default
    storage = DSPy::Storage::ProgramStorage.new
    id = storage.store(program: ClassifyTextPredictor.new(instruction: "as").to_h,
                       metadata: { signature: "ClassifyText", optimization_method: :miprov2, performance: 0.9,
                                   examples_count: 150, created_at: Time.current - 3.days })
    performance = DSPy::Storage::PerformanceStorage.new(storage)
    performance.record_performance(id, { accuracy: 0.9 })

    # Performance Tracking Storage: get_performance_history(program_id, time_range: 30.days)
    history = performance.get_performance_history(id, time_range: 30.days)
    assert_equal performance.get_performance_history(id, time_range: 30 * 86_400).map { |r| r[:id] }, history.map { |r| r[:id] }
    assert_equal 1, history.size
    assert_kind_of Date, history.first[:timestamp].to_date

    # Advanced Querying: created_at: { gte: 1.week.ago } and time_range: 30.days
    search_results = storage.search({ signature: 'ClassifyText', performance: { gte: 0.85 }, created_at: { gte: 1.week.ago },
                                      optimization_method: ['miprov2', 'simple_optimizer'], metadata: { examples_count: { gte: 100 } },
                                      sort: [{ performance: :desc }, { created_at: :desc }], limit: 10 })
    assert_equal [id], search_results.map { |r| r[:id] }
    assert_empty storage.search({ signature: 'ClassifyText', created_at: { gte: 2.days.ago } })
    performance_over_time = storage.time_series({ signature: 'ClassifyText', metric: :performance, interval: :day, time_range: 30.days })
    assert_equal storage.time_series({ signature: 'ClassifyText', metric: :performance, interval: :day, time_range: 30 * 86_400 }),
                 performance_over_time

    # Cleanup and Archival: the page's default policy written with ActiveSupport (a dry run).
    manager = DSPy::Storage::StorageManager.new(storage)
    with_as = manager.cleanup_old_versions(retention_policy: { archive_threshold: 90.days, delete_threshold: 1.year }, dry_run: true)
    plain = manager.cleanup_old_versions(retention_policy: { archive_threshold: 90 * 86_400, delete_threshold: 365 * 86_400 }, dry_run: true)
    assert_equal "90d", with_as[:policy][:archive_after]
    assert_equal plain[:kept].map { |e| e[:id] }.sort, with_as[:kept].map { |e| e[:id] }.sort

    # Monitor Storage Usage: storage.recent_activity(7.days)
    assert_equal storage.recent_activity(7 * 86_400)[:by_day], DSPy::Storage.current.recent_activity(7.days)[:by_day]
  end
end
