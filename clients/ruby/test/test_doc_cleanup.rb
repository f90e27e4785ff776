# frozen_string_literal: true

require_relative "test_helper"

# DSPy.rb "Storage System", section "Cleanup and Archival": the page's snippet is the class
#
#   class StorageManager
#     def initialize(storage)
#     def cleanup_old_versions(retention_policy: {})
#       default_policy = { keep_latest: 5, keep_high_performing: true, keep_production: true,
#                          archive_threshold: 90.days, delete_threshold: 1.year }
#       # per signature (@storage.list_signatures, @storage.list_versions): keep the latest, the
#       # high performers (> 95th percentile) and production; archive older than archive_threshold,
#       # delete older than delete_threshold (@storage.delete)
#     def archive_to_cold_storage(program_ids)   # ... @storage.update(program_id, {archived: true, ...})
#     def restore_from_archive(program_id)       # raise "Program #{program_id} is not archived" unless archived
#
# Cleanup works on the whole store, so this class has a server of its own. Adaptations:
# "ActiveSupport replaced by plain Ruby" (`90.days` → `90 * 86400`, `1.year` → `365 * 86400`) and
# "default storage configured once".
class TestDocCleanup < StorageTest
  def self.own_server?
    true
  end

  # ClassifyText 1.0.0 .. 1.0.7: 1.0.0 is 400 days old, 1.0.1 200 days old but production,
  # 1.0.2 100 days old, the rest recent; the best score is the latest's.
  # The page's argument-less storage, the seeded ids and a StorageManager of that storage.
  def seeded_manager
    configure_default
    storage = DSPy::Storage::ProgramStorage.new
    ages = [400, 200, 100, 3, 2, 1, 0, 0]
    ids = ages.each_with_index.map do |age, i|
      store_aged(storage, "v1.0.#{i}", age, signature: "ClassifyText", version: "1.0.#{i}", performance: 0.70 + 0.02 * i,
                                            environment: i == 1 ? "production" : "staging")
    end
    [storage, ids, DSPy::Storage::StorageManager.new(storage)]
  end

  def test_cleanup_old_versions
    storage, ids, manager = seeded_manager

    # The plan first (dry_run: true changes nothing), equal to the server's plan of the same policy.
    plan = manager.cleanup_old_versions(retention_policy: { archive_threshold: 90 * 86_400 }, dry_run: true)
    raw = server.json(:post, "/maintenance/cleanup", body: {
                        dry_run: true, policy: { keep_latest: 5, keep_high_performing: true, keep_production: true,
                                                 archive_after: "90d", delete_after: "365d" }
                      })
    %w[kept archived deleted].each do |list|
      assert_equal raw[list].map { |e| [e["id"], e["reason"]] }.sort,
                   plan[list.to_sym].map { |e| [e[:id], e[:reason]] }.sort, list
    end
    mine = ->(list) { list.map { |e| e[:id] } & ids } # (another test's programs may share the store)
    assert_equal [ids[0]], mine.call(plan[:deleted])
    assert_equal [ids[2]], mine.call(plan[:archived])
    assert_equal "active", raw_metadata(ids[0])["status"]

    # As on the page: cleanup_old_versions with the default policy.
    result = manager.cleanup_old_versions
    assert_equal false, result[:dry_run]
    assert_equal [ids[0]], mine.call(result[:deleted])
    assert_equal [ids[2]], mine.call(result[:archived])
    assert_includes result[:kept].map { |e| e[:id] }, ids[1], "production is kept"
    assert_equal 404, server.raw(:get, "/programs/#{ids[0]}/metadata").first
    assert_equal "archived", raw_metadata(ids[2])["status"]
    assert_raises(DSPy::Storage::NotFound) { storage.load(ids[0]) }
    assert_raises(DSPy::Storage::Archived) { storage.load(ids[2]) }
    # The page reads the registry through list_signatures / list_versions.
    assert_equal ["ClassifyText"], storage.list_signatures
    assert_equal server.get("/signatures/ClassifyText/versions?#{q(project: @project)}")["versions"].map { |v| v["id"] },
                 storage.list_versions("ClassifyText").map { |v| v[:storage_id] }
  end

  def test_archive_and_restore
    storage, ids, manager = seeded_manager
    before = storage.load(ids[4]).bytes

    # archive_to_cold_storage(program_ids)
    answers = manager.archive_to_cold_storage([ids[4], ids[5]])
    assert_equal %w[archived archived], answers.map { |a| a[:status] }
    assert_equal "archived", raw_metadata(ids[4])["status"]
    assert_equal 409, server.raw(:get, "/programs/#{ids[4]}/program").first
    error = assert_raises(DSPy::Storage::Archived) { storage.load(ids[4]) }
    assert_equal 409, error.status
    assert_equal "archived", error.code
    # The page also records the archive in the metadata (@storage.update).
    updated = storage.update(ids[4], { archived: true, cold_storage_id: "cold-#{ids[4]}", archived_at: Time.now })
    assert_equal true, updated.dig(:metadata, :archived)
    assert_equal "cold-#{ids[4]}", raw_metadata(ids[4])["metadata"]["cold_storage_id"]

    # restore_from_archive(program_id)
    restored = manager.restore_from_archive(ids[4])
    assert_includes %w[active restoring], restored[:status]
    # S3 answers "restoring" until its copy is ready; the next loads finish the restore.
    loaded = nil
    30.times do
      loaded = storage.load(ids[4])
      break
    rescue DSPy::Storage::Archived
      sleep 0.2
    end
    assert_equal before, loaded.bytes
    assert_equal "active", raw_metadata(ids[4])["status"]
    storage.update(ids[4], { archived: false, restored_at: Time.now })
    assert_equal false, raw_metadata(ids[4])["metadata"]["archived"]

    error = assert_raises(ArgumentError) { manager.restore_from_archive(ids[6]) }
    assert_equal "Program #{ids[6]} is not archived", error.message

    # delete(id): the page's @storage.delete.
    assert storage.delete(ids[3])
    assert_equal 404, server.raw(:get, "/programs/#{ids[3]}").first
  end
end
