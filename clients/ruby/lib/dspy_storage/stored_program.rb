# frozen_string_literal: true

require "json"

module DSPyStorage
  # A loaded program: the program (a Hash with symbol keys, or with `into:` the module rebuilt by
  # `into.from_h(hash)`), its metadata (symbol keys, as DSPy.rb's documentation reads them:
  # `metadata[:version]`, `metadata[:performance]`, ...), the record's facts, and where it came from.
  class StoredProgram
    # +program+ the module (with into:) or the saved Hash; +state+ always the saved Hash;
    # +bytes+ the program's stored JSON exactly (its SHA-256 is +sha256+, checked).
    attr_reader :id, :signature, :version, :project, :sha256, :size, :created_at, :updated_at,
                :status, :metadata, :program, :state, :bytes, :source

    # +record+ is the metadata route's answer (string keys); +source+ :server or :cache;
    # +stale+ true when the service was unreachable and this is the last target known here.
    def initialize(record:, bytes:, into: nil, source: :server, stale: false)
      @id = record["id"]
      @signature = record["signature"]
      @version = record["version"]
      @project = record["project"]
      @sha256 = record["sha256"]
      @size = record["size"] || bytes.bytesize
      @created_at = Wire.parse_time(record["created_at"].to_s)
      @updated_at = Wire.parse_time(record["updated_at"].to_s)
      @status = record["status"]
      @bytes = bytes
      @state = JSON.parse(bytes, symbolize_names: true)
      @program = into ? into.from_h(@state) : @state
      @metadata = Wire.symbolize(record["metadata"] || {}).merge(
        signature: @signature, version: @version, project: @project,
        created_at: @created_at, updated_at: @updated_at, status: @status
      )
      @source = source
      @stale = stale
      freeze
    end

    def stale
      @stale
    end
    alias stale? stale

    def to_h
      { id: id, signature: signature, version: version, project: project, sha256: sha256, size: size,
        created_at: created_at, updated_at: updated_at, status: status, metadata: metadata,
        program: state, stale: stale, source: source }
    end

    def inspect
      "#<#{self.class.name} #{signature} v#{version} id=#{id} sha256=#{sha256.to_s[0, 12]} source=#{source}#{" stale" if stale}>"
    end
  end
end
