# frozen_string_literal: true

module DSPyStorage
  # DSPy.rb's documented BackupManager: consistent backups of the whole store, kept by the service
  # (its backup bucket on AWS, its data directory when local), and restores of them.
  class BackupManager
    attr_reader :storage

    def initialize(storage = DSPyStorage.current)
      @storage = storage
    end

    # Backs up every program, metric record, alias and run; answers `{backup_id:, backup_name:,
    # size:, programs_count:, metrics_count:}`. Without a name the service names it. A backup the
    # service stopped at its deadline is resumed until it completes.
    def create_backup(backup_name = nil, max_resumes: 100)
      answer = @storage.create_backup(backup_name)
      resumes = 0
      while answer[:status] == "in_progress"
        raise Unavailable.new("backup still in progress after #{max_resumes} resumes", code: "unavailable") if resumes >= max_resumes

        resumes += 1
        answer = @storage.create_backup(nil)
      end
      answer.slice(:backup_id, :backup_name, :size, :programs_count, :metrics_count)
    end

    # Restores a backup: `{restored_programs:, restored_metrics:, restore_time:, ...}`. Accepts the
    # documentation's options Hash (`restore_backup(name, verify_compatibility: true)` or
    # `restore_backup(name, {verify_compatibility: true})`).
    def restore_backup(backup_name, options = nil, verify_compatibility: true)
      verify = options ? options.fetch(:verify_compatibility, options.fetch("verify_compatibility", verify_compatibility)) : verify_compatibility
      @storage.restore_backup(backup_name, verify_compatibility: verify)
    end

    def list_backups
      @storage.list_backups
    end
  end
end
