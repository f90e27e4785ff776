# frozen_string_literal: true

# Binds the classes at the names of DSPy.rb's "Storage System" documentation:
# DSPy::Storage::ProgramStorage, VersionedProgramStorage, PerformanceStorage, ProgramSearch,
# StorageManager, BackupManager, StorageMonitor, StoredProgram, the error classes, and
# DSPy::Storage.current / DSPy::Storage.configure.
#
# When DSPy.rb is installed it is loaded first (so that its own files cannot reopen these classes
# later), and its local-file classes of the same names (DSPy::Storage::ProgramStorage and
# StorageManager) are replaced by these; that is said once on stderr. Without this file DSPy.rb's
# classes are untouched.

require_relative "../dspy_storage"

unless defined?(::DSPy::VERSION)
  begin
    require "dspy"
  rescue LoadError => e
    raise unless e.path == "dspy" # DSPy.rb is not installed: bind the names on their own
  end
end

module DSPy
  module Storage
  end
end

module DSPyStorage
  # The names bound under DSPy::Storage, and those that replaced a DSPy.rb class.
  module DSPyBinding
    NAMES = (DSPyStorage::CLASSES + DSPyStorage::ERROR_CLASSES).freeze

    class << self
      attr_reader :replaced

      def bind!
        return if @bound

        @bound = true
        @replaced = []
        NAMES.each do |name|
          ours = DSPyStorage.const_get(name)
          if ::DSPy::Storage.const_defined?(name, false)
            theirs = ::DSPy::Storage.const_get(name, false)
            next if theirs.equal?(ours)

            @replaced << name
            ::DSPy::Storage.send(:remove_const, name)
          end
          ::DSPy::Storage.const_set(name, ours)
        end
        ::DSPy::Storage.define_singleton_method(:current) { DSPyStorage.current }
        ::DSPy::Storage.define_singleton_method(:configure) { |**options| DSPyStorage.configure(**options) }
        return if @replaced.empty?

        names = @replaced.map { |n| "DSPy::Storage::#{n}" }.join(", ")
        warn "dspy-storage: #{names} now use the dspy-storage service " \
             "(#{DSPyStorage.settings[:url] || ENV["DSPY_STORAGE_URL"] || "http://127.0.0.1:8080"}) " \
             "instead of DSPy.rb's local files (require \"dspy_storage\" without \"/dspy\" to keep them)"
      end
    end
  end
end

DSPyStorage::DSPyBinding.bind!
