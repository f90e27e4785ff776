# frozen_string_literal: true

require "digest"
require "fileutils"
require "json"
require "securerandom"

module DSPyStorage
  # The program cache: memory and disk, every read verified against the record's SHA-256.
  #
  # On disk, under <cache_dir>/<namespace>/ (one namespace per service URL and project, so two
  # services or projects never share entries):
  #   blobs/<sha256>.json    a program's stored bytes exactly (content-addressed)
  #   records/<id>.json      the program's record as the service answered it (metadata route)
  #   versions/<key>.json    an exact version's program id (immutable)
  #   resolved/<key>.json    the last target of `latest` or an alias this machine resolved, and
  #                          when: what a load answers, marked stale, while the service is down
  # Files are written atomically (a temporary file renamed into place), so several processes can
  # share a directory and a crash leaves no half-written entry. Bytes that do not hash to their
  # name are never returned: reading them raises IntegrityError and removes the file.
  class Cache
    attr_reader :root

    def self.default_dir
      return ENV["DSPY_STORAGE_CACHE_DIR"] if ENV["DSPY_STORAGE_CACHE_DIR"] && !ENV["DSPY_STORAGE_CACHE_DIR"].empty?

      base = if Gem.win_platform?
               ENV["LOCALAPPDATA"] || File.join(Dir.home, "AppData", "Local")
             elsif RUBY_PLATFORM.include?("darwin")
               File.join(Dir.home, "Library", "Caches")
             else
               ENV["XDG_CACHE_HOME"].to_s.empty? ? File.join(Dir.home, ".cache") : ENV["XDG_CACHE_HOME"]
             end
      File.join(base, "dspy-storage", "ruby")
    end

    def self.key(*parts)
      Digest::SHA256.hexdigest(parts.join("\n"))[0, 32]
    end

    # +dir+: a directory, or nil for memory only.
    def initialize(dir, url, project)
      @lock = Mutex.new
      @blobs = {}
      @records = {}
      @versions = {}
      @resolved = {}
      @root = dir && File.join(dir.to_s, Cache.key(url, project))
      write_json(path("namespace.json"), { "url" => url, "project" => project }) if @root
    end

    # --- programs ------------------------------------------------------------------------------

    # Keeps a verified program: its bytes (by hash) and its record (by id).
    def put_program(record, bytes)
      sha = record.fetch("sha256")
      raise IntegrityError.new("refusing to cache bytes that do not hash to #{sha}") unless Digest::SHA256.hexdigest(bytes) == sha

      @lock.synchronize { @blobs[sha] = bytes }
      blob = path("blobs", "#{sha}.json")
      write(blob, bytes) if blob && !File.exist?(blob)
      put_record(record)
      put_version(record["signature"], record["version"], record["id"]) if record["signature"] && record["version"]
    end

    def put_record(record)
      @lock.synchronize { @records[record.fetch("id")] = record }
      file = path("records", "#{Cache.key(record["id"])}.json")
      write_json(file, record) if file
    end

    def record(id)
      hit = @lock.synchronize { @records[id] }
      return hit if hit

      file = path("records", "#{Cache.key(id)}.json")
      rec = file && read_json(file)
      return nil unless rec.is_a?(Hash) && rec["id"] == id && rec["sha256"].is_a?(String)

      @lock.synchronize { @records[id] = rec }
    end

    # The bytes with this SHA-256, verified (nil when absent); IntegrityError when a cached copy
    # does not match, after removing it.
    def blob(sha)
      bytes = @lock.synchronize { @blobs[sha] }
      where = "in memory"
      if bytes.nil?
        file = path("blobs", "#{sha}.json")
        return nil unless file && File.file?(file)

        bytes = File.binread(file)
        where = "on disk (#{file})"
      end
      unless Digest::SHA256.hexdigest(bytes) == sha
        @lock.synchronize { @blobs.delete(sha) }
        file = path("blobs", "#{sha}.json")
        FileUtils.rm_f(file) if file
        raise IntegrityError.new("the cached program #{sha[0, 12]}... #{where} does not match its SHA-256; the entry was removed")
      end
      @lock.synchronize { @blobs[sha] = bytes }
    end

    # Drops a program's record and every version or resolution naming it.
    def forget_program(id)
      @lock.synchronize do
        @records.delete(id)
        @versions.delete_if { |_, v| v["id"] == id }
        @resolved.delete_if { |_, v| v["id"] == id }
      end
      %w[versions resolved].each do |folder|
        dir = path(folder)
        next unless dir && File.directory?(dir)

        Dir.glob(File.join(dir, "*.json")).each do |f|
          v = read_json(f)
          FileUtils.rm_f(f) if v.is_a?(Hash) && v["id"] == id
        end
      end
      file = path("records", "#{Cache.key(id)}.json")
      FileUtils.rm_f(file) if file
    end

    # Forgets a cached record (the next load reads it again); the bytes stay.
    def forget_record(id)
      @lock.synchronize { @records.delete(id) }
      file = path("records", "#{Cache.key(id)}.json")
      FileUtils.rm_f(file) if file
    end

    # --- exact versions (immutable) ---------------------------------------------------------------

    def put_version(signature, version, id)
      put_entry("versions", @versions, { "signature" => signature, "version" => version, "id" => id })
    end

    def version(signature, version)
      entry("versions", @versions, { "signature" => signature, "version" => version })&.fetch("id")
    end

    # --- latest / alias resolutions -----------------------------------------------------------------

    def put_resolved(signature, selector, id, sha, at)
      put_entry("resolved", @resolved, { "signature" => signature, "selector" => selector, "id" => id,
                                         "sha256" => sha, "resolved_at" => at })
    end

    def resolved(signature, selector)
      entry("resolved", @resolved, { "signature" => signature, "selector" => selector })
    end

    # Forgets a resolution (the service said the alias or signature is gone).
    def forget_resolved(signature, selector)
      key = Cache.key(signature, selector)
      @lock.synchronize { @resolved.delete(key) }
      file = path("resolved", "#{key}.json")
      FileUtils.rm_f(file) if file
    end

    # Marks a resolution as due for a refresh (the client's own write moved it) but keeps it as
    # the fallback for when the service is down.
    def expire_resolved(signature, selector)
      entry = resolved(signature, selector)
      put_resolved(signature, selector, entry["id"], entry["sha256"], 0) if entry
    end

    # Marks every resolution due (a restore of a backup may move any of them).
    def expire_all_resolved
      keys = @lock.synchronize { @resolved.values.map { |e| [e["signature"], e["selector"]] } }
      dir = path("resolved")
      if dir && File.directory?(dir)
        Dir.glob(File.join(dir, "*.json")).each do |f|
          v = read_json(f)
          keys << [v["signature"], v["selector"]] if v.is_a?(Hash)
        end
      end
      keys.uniq.each { |sig, sel| expire_resolved(sig, sel) }
    end

    private

    # An entry of +folder+ named by its signature and version/selector, in +table+ and on disk.
    def put_entry(folder, table, entry)
      key = Cache.key(entry["signature"], entry["version"] || entry["selector"])
      @lock.synchronize { table[key] = entry }
      file = path(folder, "#{key}.json")
      write_json(file, entry) if file
    end

    # The entry whose fields include +naming+ (from memory, else from disk), or nil.
    def entry(folder, table, naming)
      key = Cache.key(*naming.values)
      hit = @lock.synchronize { table[key] }
      return hit if hit

      file = path(folder, "#{key}.json")
      found = file && read_json(file)
      return nil unless found.is_a?(Hash) && found["id"] && naming.all? { |k, v| found[k] == v }

      @lock.synchronize { table[key] = found }
    end

    def path(*parts)
      @root && File.join(@root, *parts)
    end

    def write(file, bytes)
      dir = File.dirname(file)
      FileUtils.mkdir_p(dir)
      tmp = File.join(dir, ".tmp-#{Process.pid}-#{SecureRandom.hex(6)}")
      File.binwrite(tmp, bytes)
      File.rename(tmp, file)
    rescue SystemCallError, IOError => e
      FileUtils.rm_f(tmp) if tmp
      warn "dspy-storage cache: cannot write #{file} (#{e.message}); kept in memory only"
    end

    def write_json(file, value)
      write(file, JSON.generate(value))
    end

    def read_json(file)
      JSON.parse(File.binread(file))
    rescue SystemCallError, IOError, JSON::ParserError
      nil
    end
  end
end
