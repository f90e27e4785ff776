# frozen_string_literal: true

module DSPyStorage
  # DSPy.rb's documented StorageManager: retention (cleanup_old_versions) and cold archive, planned
  # and applied by the service, which never archives or deletes a signature's latest version, an
  # alias target or a production version.
  class StorageManager
    # The documentation's default policy (durations in seconds).
    DEFAULT_POLICY = {
      keep_latest: 5,                  # keep the 5 highest versions
      keep_high_performing: true,      # keep versions at or above the 95th percentile
      keep_production: true,           # keep versions marked production (environment or tag)
      archive_threshold: 90 * 86_400,  # archive versions older than 90 days
      delete_threshold: 365 * 86_400   # delete versions older than 1 year
    }.freeze

    POLICY_KEYS = {
      keep_latest: "keep_latest", keep_high_performing: "keep_high_performing",
      keep_production: "keep_production", archive_threshold: "archive_after",
      archive_after: "archive_after", delete_threshold: "delete_after", delete_after: "delete_after",
      archive_below_performance: "archive_below_performance"
    }.freeze

    attr_reader :storage

    def initialize(storage = DSPyStorage.current)
      @storage = storage
    end

    # Applies the retention policy to every signature (DEFAULT_POLICY merged with
    # +retention_policy+; durations as seconds, ActiveSupport durations or "90d"). `dry_run: true`
    # only plans. Answers `{dry_run:, kept: [...], archived: [...], deleted: [...], skipped: [...],
    # summary:}`, each entry `{id:, signature:, version:, reason:}`; a run the service cut at its
    # time limit is continued until complete.
    def cleanup_old_versions(retention_policy: {}, dry_run: false, as_of: nil)
      policy = service_policy(DEFAULT_POLICY.merge(retention_policy.transform_keys(&:to_sym)))
      result = nil
      cursor = nil
      loop do
        answer = @storage.cleanup(policy: policy, dry_run: dry_run, as_of: as_of, cursor: cursor)
        result = result ? merge(result, answer) : answer
        cursor = answer[:next_cursor]
        break if answer[:complete] || cursor.nil?
      end
      result
    end

    # Moves each program's blob to cold storage; answers each `{id:, status: "archived", ...}`.
    def archive_to_cold_storage(program_ids)
      Array(program_ids).map { |id| @storage.archive(id) }
    end

    # Brings an archived program back (status "active", or "restoring" while S3 retrieves it).
    # ArgumentError when the program is not archived.
    def restore_from_archive(program_id)
      metadata = @storage.load_metadata(program_id)
      raise ArgumentError, "Program #{program_id} is not archived" if metadata[:status] == "active"

      @storage.restore(program_id)
    end

    private

    def service_policy(policy)
      policy.each_with_object({}) do |(key, value), out|
        name = POLICY_KEYS[key]
        raise ArgumentError, "unknown retention policy key #{key.inspect} (known: #{POLICY_KEYS.keys.join(", ")})" unless name

        out[name] = %w[archive_after delete_after].include?(name) ? Wire.duration(value) : value
      end
    end

    def merge(into, page)
      %i[kept archived deleted skipped].each { |k| into[k] = into[k] + page[k] }
      into[:summary] = page[:summary]
      into[:complete] = page[:complete]
      into[:next_cursor] = page[:next_cursor]
      into
    end
  end
end
