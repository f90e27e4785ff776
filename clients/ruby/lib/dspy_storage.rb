# frozen_string_literal: true

# dspy-storage for Ruby: the storage classes of DSPy.rb's "Storage System" documentation, backed by
# the dspy-storage HTTP API (a local `dspy-storage serve` or the AWS stack). Standard library only;
# SigV4 signing through the aws-sigv4 gem when `aws_iam: true`.
#
#   require "dspy_storage"          # DSPyStorage::ProgramStorage, ...
#   require "dspy_storage/dspy"     # also DSPy::Storage::ProgramStorage, ... (the documentation's names)

require "monitor"

require_relative "dspy_storage/version"
require_relative "dspy_storage/errors"
require_relative "dspy_storage/wire"
require_relative "dspy_storage/transport"
require_relative "dspy_storage/cache"
require_relative "dspy_storage/stored_program"
require_relative "dspy_storage/program_storage"
require_relative "dspy_storage/versioned_program_storage"
require_relative "dspy_storage/performance_storage"
require_relative "dspy_storage/program_search"
require_relative "dspy_storage/storage_manager"
require_relative "dspy_storage/backup_manager"
require_relative "dspy_storage/storage_monitor"

module DSPyStorage
  # Every class the documentation names (bound under DSPy::Storage by dspy_storage/dspy).
  CLASSES = %i[ProgramStorage StoredProgram VersionedProgramStorage PerformanceStorage ProgramSearch
               StorageManager BackupManager StorageMonitor].freeze

  @settings = {}
  @current = nil
  @lock = Monitor.new

  class << self
    # The options every ProgramStorage.new starts from (what configure set).
    def settings
      @lock.synchronize { @settings.dup }
    end

    # Configures the default storage once: `DSPyStorage.configure(url: "http://127.0.0.1:8080",
    # project: "team-a", token: ..., cache_ttl: 60, ...)` (the options of ProgramStorage.new).
    # Argument-less constructors (`ProgramStorage.new`, `StorageMonitor.new`, ...) and `current`
    # use them.
    def configure(**options)
      unknown = options.keys - ProgramStorage::OPTIONS
      raise ArgumentError, "unknown option(s) #{unknown.join(", ")}" unless unknown.empty?

      old = @lock.synchronize do
        @settings = @settings.merge(options)
        previous = @current
        @current = nil
        previous
      end
      old&.close
      current
    end

    # The default storage (built from configure's options, else from the environment).
    def current
      @lock.synchronize { @current ||= ProgramStorage.new }
    end

    # Forgets the configuration (tests).
    def reset!
      old = @lock.synchronize do
        @settings = {}
        previous = @current
        @current = nil
        previous
      end
      old&.close
    end
  end
end
