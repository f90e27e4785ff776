# frozen_string_literal: true

require_relative "test_helper"

# DSPy.rb "Storage System", section "Backup and Recovery": the page's snippet is the class
#
#   class BackupManager
#     def initialize(storage, backup_storage)
#     def create_backup(backup_name = nil)
#       backup_name ||= "backup_#{Time.current.strftime('%Y%m%d_%H%M%S')}"
#       # a consistent snapshot of programs, metrics and metadata, stored under backup_name
#       { backup_id:, backup_name:, size:, programs_count: }
#     def restore_backup(backup_name, options = {})
#       # verify_version_compatibility if options[:verify_compatibility]; restore programs,
#       # metrics and metadata
#       { restored_programs:, restored_metrics:, restore_time: }
#
# The service keeps its backups (its backup bucket, or the local server's data directory), so the
# class takes the storage only. Backups cover the whole store: this class has a server of its own.
# Adaptation: "default storage configured once". (`Time.current` of the page is inside the class:
# the name below is made with plain Ruby's Time.now.)
class TestDocBackup < StorageTest
  def self.own_server?
    true
  end

  def test_create_and_restore_backup
    configure_default
    storage = DSPy::Storage::ProgramStorage.new
    text = File.binread(FIXTURE)
    real = storage.store(program: text, metadata: { optimization_method: :miprov2, performance: 1.0 })
    other = storage.store(program: ClassifyTextPredictor.new(instruction: "Classify.").to_h,
                          metadata: { signature: "ClassifyText", performance: 0.9 })
    storage.set_alias("ManageExtractionConversation", "production", "1.0.0")
    DSPy::Storage::PerformanceStorage.new(storage).record_performance(real, { accuracy: 0.93 })
    manager = DSPy::Storage::BackupManager.new(storage)

    # create_backup(backup_name): the page's name form.
    backup_name = "backup_#{Time.now.utc.strftime("%Y%m%d_%H%M%S")}"
    backup = manager.create_backup(backup_name)
    manifest = server.get("/backups/#{backup_name}")
    listed = server.get("/backups")["backups"].find { |b| b["backup_name"] == backup_name }
    assert_equal backup_name, backup[:backup_name]
    assert_equal listed["backup_id"], backup[:backup_id]
    assert_equal listed["size"], backup[:size]
    assert_equal listed["programs_count"], backup[:programs_count]
    assert_equal 2, backup[:programs_count]
    refute_nil manifest
    # create_backup(nil): the service names it.
    unnamed = manager.create_backup
    refute_nil unnamed[:backup_name]
    assert_equal [unnamed[:backup_name], backup_name], manager.list_backups.map { |b| b[:backup_name] }.first(2)

    # Lose a program, then restore_backup(backup_name, verify_compatibility: true).
    storage.delete(real, force: true)
    assert_equal 404, server.raw(:get, "/programs/#{real}").first
    restored = manager.restore_backup(backup_name, verify_compatibility: true)
    assert_equal 1, restored[:restored_programs]
    assert_equal 1, restored[:already_present_programs]
    assert_operator restored[:restored_metrics], :>=, 1
    assert_kind_of Numeric, restored[:restore_time]
    bytes, = raw_bytes(real)
    assert_equal text, bytes, "restored byte for byte"
    assert_equal real, server.get("/signatures/ManageExtractionConversation/aliases/production?#{q(project: @project)}")["id"]
    assert_equal text, storage.load_alias("ManageExtractionConversation", "production").bytes
    assert_equal 1, server.get("/programs/#{real}/metrics")["records"].size
    assert_equal other, storage.load(other).id

    # The page's options Hash form; a second restore writes nothing.
    again = manager.restore_backup(backup_name, { verify_compatibility: true })
    assert_equal 0, again[:restored_programs]
    assert_equal 2, again[:already_present_programs]
    assert_raises(DSPy::Storage::NotFound) { manager.restore_backup("no_such_backup") }
    assert_raises(DSPy::Storage::Conflict) { manager.create_backup(backup_name) }
  end
end
