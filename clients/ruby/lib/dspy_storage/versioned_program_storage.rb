# frozen_string_literal: true

module DSPyStorage
  # DSPy.rb's documented VersionedProgramStorage: semantic versions per signature, kept by the
  # service (the version registry is the service's, so every process sees the same versions).
  class VersionedProgramStorage
    attr_reader :storage

    def initialize(base_storage = DSPyStorage.current)
      @storage = base_storage
    end

    # Stores +program+ as +version+ of `metadata[:signature]`; answers the storage id. An invalid
    # semantic version is an ArgumentError (as the service's answer says), a taken one a Conflict.
    def store_version(program, version:, metadata: {})
      @storage.store(program: program, metadata: metadata.merge(version: version.to_s))
    rescue InvalidRequest => e
      raise ArgumentError, "Invalid version format: #{e.message}" if e.field == "metadata.version"

      raise
    end

    # The StoredProgram of a version (:latest, "latest" or an exact version); NotFound when absent.
    def load_version(signature, version: :latest, into: nil)
      @storage.load_version(signature, version.to_s, into: into)
    end

    # The versions of a signature, oldest first: `{version:, storage_id:, created_at:, performance:,
    # size:, aliases:}` (performance is the primary score).
    def list_versions(signature)
      @storage.list_versions(signature).each_with_index.sort_by { |v, i| [v[:created_at], i] }.map do |v, _|
        v.slice(:version, :storage_id, :created_at, :performance, :size, :aliases)
      end
    end

    # A new version (the next patch after the latest) whose program is byte-identical to
    # +target_version+'s; its metadata gets rollback_from, rollback_to and rollback_timestamp. It
    # becomes latest. Answers its storage id.
    def rollback_to_version(signature, target_version)
      @storage.rollback(signature, target_version)
    end

    def get_latest_version(signature)
      @storage.latest_version(signature)
    end
  end
end
