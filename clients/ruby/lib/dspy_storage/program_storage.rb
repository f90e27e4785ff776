# frozen_string_literal: true

require "digest"
require "json"
require "securerandom"

module DSPyStorage
  # The dspy-storage service from Ruby: DSPy.rb's documented `ProgramStorage`, backed by the HTTP
  # API of a local `dspy-storage serve` or the AWS stack.
  #
  # Loads fetch the program's stored bytes from the exact-bytes routes (`.../program`) and check
  # their SHA-256 against the record before anything is returned. Loads by id and by exact version
  # are immutable: kept in memory and on disk and never fetched twice. `latest` and aliases are
  # resolved through the service at most once per +cache_ttl+ seconds (refreshed inline, with
  # If-None-Match, so an unchanged target costs no transfer); when the service is unreachable they
  # answer the last target this machine resolved, from disk, with `stale == true`.
  class ProgramStorage
    OPTIONS = %i[url token aws_iam aws_region aws_credentials project cache_ttl cache_dir timeout
                 retries offline logger sleeper].freeze

    attr_reader :url, :project, :cache_ttl, :cache

    # Every option defaults to what DSPyStorage.configure set, else to the environment
    # (DSPY_STORAGE_URL, DSPY_STORAGE_TOKEN, DSPY_STORAGE_PROJECT, DSPY_STORAGE_CACHE_DIR,
    # DSPY_STORAGE_OFFLINE), else to the values below. `cache_dir: false` keeps the cache in memory.
    def initialize(**options)
      unknown = options.keys - OPTIONS
      raise ArgumentError, "unknown option(s) #{unknown.join(", ")} (known: #{OPTIONS.join(", ")})" unless unknown.empty?

      o = DSPyStorage.settings.merge(options.compact)
      @url = (o[:url] || ENV["DSPY_STORAGE_URL"] || "http://127.0.0.1:8080").to_s.sub(%r{/+\z}, "")
      @project = o[:project] || (ENV["DSPY_STORAGE_PROJECT"].to_s.empty? ? nil : ENV["DSPY_STORAGE_PROJECT"])
      @cache_ttl = Wire.seconds(o.fetch(:cache_ttl, 60))
      @offline = o.key?(:offline) ? o[:offline] : %w[1 true yes on].include?(ENV["DSPY_STORAGE_OFFLINE"].to_s.downcase)
      @logger = o[:logger]
      @transport = Transport.new(
        url: @url, token: o[:token] || ENV["DSPY_STORAGE_TOKEN"], aws_iam: o[:aws_iam] || false,
        aws_region: o[:aws_region], aws_credentials: o[:aws_credentials],
        timeout: o.fetch(:timeout, 10), retries: o.fetch(:retries, 3), sleeper: o[:sleeper]
      )
      dir = o.key?(:cache_dir) ? o[:cache_dir] : Cache.default_dir
      dir = Cache.default_dir if dir.nil?
      @cache = Cache.new(dir == false ? nil : dir, @url, @project || "default")
    end

    def offline?
      @offline
    end

    def close
      @transport.close
    end

    def inspect
      "#<#{self.class.name} url=#{@url} project=#{@project || "default"}#{" offline" if @offline}>"
    end

    # --- storing ---------------------------------------------------------------------------------

    # Stores a program; answers its storage id. +program+: an object responding to #to_h (a DSPy.rb
    # module), a Hash/Array (an already-saved program) or a String of JSON (stored byte for byte).
    # +metadata+ as the API (`signature` is taken from a DSPy.rb program's `signature_class` when
    # absent). Every store carries an Idempotency-Key (generated unless given), so a retried store
    # never makes a second version. `import_optimization: true` also records the optimization run
    # of a DSPy.rb saved-program envelope.
    def store(program:, metadata: {}, idempotency_key: nil, import_optimization: false)
      bytes = program_bytes(program)
      meta = Wire.dump(metadata || {})
      raise ArgumentError, "metadata must be a Hash" unless meta.is_a?(Hash)

      meta["signature"] ||= derived_signature(program, bytes)
      meta["project"] ||= @project if @project
      body = "{\"program\": ".b
      body << bytes.b << ", \"metadata\": " << JSON.generate(meta).b << "}"
      answer = call(:post, "/programs", body: body, idempotent: true,
                                        query: import_optimization ? { import_optimization: "true" } : nil,
                                        headers: { "idempotency-key" => idempotency_key || "rb-#{SecureRandom.uuid}" })
      @cache.expire_resolved(answer["signature"], "latest")
      answer["id"]
    end

    # --- loading ---------------------------------------------------------------------------------

    # Loads a program by id (immutable: from the cache when it holds it, else from the service).
    def load(id, into: nil)
      id = id.to_s
      hit = cached_program(id, into)
      return hit if hit

      online!("load program #{id}")
      res = get_bytes("/programs/#{seg(id)}/program")
      fetched(res, into)
    end

    # Loads a version of a signature: an exact semantic version (immutable, cached like #load) or
    # "latest" / :latest (resolved as an alias is).
    def load_version(signature, version = "latest", into: nil)
      version = version.to_s
      return resolve(signature.to_s, "latest", into) if version == "latest"

      id = @cache.version(signature.to_s, version)
      hit = id && cached_program(id, into)
      return hit if hit

      online!("load #{signature} #{version}")
      res = get_bytes("/signatures/#{seg(signature)}/versions/#{seg(version)}/program", query: sig_query)
      fetched(res, into)
    end

    # Loads the program an alias points at (resolved at most once per cache_ttl).
    def load_alias(signature, alias_name, into: nil)
      resolve(signature.to_s, "alias:#{alias_name}", into)
    end

    # Fills the cache with a target so that a process started while the service is down can load
    # it: "latest" (the default), an exact version, or `alias_name: "production"`.
    def prefetch(signature, version = "latest", alias_name: nil)
      alias_name ? load_alias(signature, alias_name) : load_version(signature, version)
    end

    # The program's metadata record, always read from the service (no program bytes).
    def load_metadata(id)
      record = call(:get, "/programs/#{seg(id)}/metadata", idempotent: true)
      @cache.put_record(record) if @cache.record(record["id"])
      metadata_view(record)
    end

    # --- versions and aliases ------------------------------------------------------------------------

    # The signature's versions in semantic-version order (oldest first): each with version,
    # storage_id (= id), created_at (Time), performance (the primary score), size and aliases.
    def list_versions(signature)
      pages("/signatures/#{seg(signature)}/versions", "versions", query: sig_query).map do |v|
        entry = Wire.times(Wire.symbolize(v))
        { version: entry[:version], storage_id: entry[:id], id: entry[:id], created_at: entry[:created_at],
          performance: entry[:performance], size: entry[:size], aliases: entry[:aliases] || [] }
      end
    end

    # The signature names of the project (with `details: true` each signature's summary).
    def list_signatures(details: false)
      list = pages("/signatures", "signatures", query: sig_query).map { |s| Wire.times(Wire.symbolize(s)) }
      details ? list : list.map { |s| s[:signature] }
    end

    # The latest version of a signature (nil when it has none): one request, no program bytes
    # (If-None-Match: * answers 304 with the target's headers).
    def latest_version(signature)
      online!("latest version of #{signature}")
      res = @transport.request(:get, "/signatures/#{seg(signature)}/versions/latest/program", query: sig_query,
                                                                                              headers: { "if-none-match" => "*" }, idempotent: true)
      return nil if res.status == 404
      raise error_of(res) unless res.status == 304 || res.status == 200

      res.header("x-dspy-version")
    end

    # Points an alias at a version. With `expected_version:` a compare-and-set (nil: the alias must
    # not exist yet); a lost race is a Conflict.
    # Points an alias at a version (+expected_version+: a compare-and-set). When the alias's
    # policy refuses the version it raises PolicyViolation (the message names the failed
    # requirement); an admin may pass +override_reason+ to move it anyway (kept in the history).
    def set_alias(signature, alias_name, version, expected_version: :unset, override_reason: nil)
      body = { "version" => version.to_s }
      cas = !expected_version.equal?(:unset)
      body["expected_version"] = expected_version&.to_s if cas
      body["override"] = { "reason" => override_reason.to_s } if override_reason
      answer = call(:put, "/signatures/#{seg(signature)}/aliases/#{seg(alias_name)}",
                    query: sig_query, body: JSON.generate(body), idempotent: !cas)
      @cache.expire_resolved(signature.to_s, "alias:#{alias_name}")
      Wire.times(Wire.symbolize(answer))
    end

    # Sets an alias's promotion policy (admin): +protected+ (moving or removing it needs the admin
    # role) and +require+, a gate on the version a move points it at: { metric:, min:,
    # min_records:, window:, environment:, not_worse_than_current:, tolerance: } (docs/API.md).
    def set_alias_policy(signature, alias_name, protected: false, require: nil)
      body = { "protected" => protected ? true : false }
      if require
        req = Wire.dump(require)
        window = require[:window] || require["window"]
        # A duration (ActiveSupport's 7.days, or seconds) becomes the API's "604800s".
        req["window"] = "#{Wire.seconds(window).round}s" if Wire.active_support_duration?(window) || window.is_a?(Numeric)
        body["require"] = req
      end
      answer = call(:put, "/signatures/#{seg(signature)}/aliases/#{seg(alias_name)}/policy",
                    query: sig_query, body: JSON.generate(body), idempotent: true)
      Wire.times(Wire.symbolize(answer))
    end

    # The alias's policy, or nil when it has none.
    def alias_policy(signature, alias_name)
      answer = call(:get, "/signatures/#{seg(signature)}/aliases/#{seg(alias_name)}/policy",
                    query: sig_query, idempotent: true)
      Wire.times(Wire.symbolize(answer))
    rescue NotFound
      nil
    end

    # Removes the alias's policy (admin); NotFound when it has none.
    def remove_alias_policy(signature, alias_name)
      call(:delete, "/signatures/#{seg(signature)}/aliases/#{seg(alias_name)}/policy", query: sig_query, idempotent: true)
      true
    end

    # The alias's history, newest first: every move, override, refusal, removal, restore and
    # policy change ({ at:, action:, from_version:, to_version:, by:, gate:, override_reason: }).
    def alias_history(signature, alias_name, limit: nil)
      path = "/signatures/#{seg(signature)}/aliases/#{seg(alias_name)}/history"
      entries = []
      cursor = nil
      loop do
        query = (sig_query || {}).merge(limit: [limit || 1000, 1000].min)
        query[:cursor] = cursor if cursor
        answer = call(:get, path, query: query, idempotent: true)
        entries.concat(answer["entries"] || [])
        cursor = answer["next_cursor"]
        break if cursor.nil? || (limit && entries.size >= limit)
      end
      entries = entries.first(limit) if limit
      entries.map { |e| Wire.times(Wire.symbolize(e)) }
    end

    def remove_alias(signature, alias_name)
      call(:delete, "/signatures/#{seg(signature)}/aliases/#{seg(alias_name)}", query: sig_query, idempotent: true)
      @cache.expire_resolved(signature.to_s, "alias:#{alias_name}")
      true
    end

    # A new version (the next patch after the latest) whose program is byte-identical to
    # +to_version+'s, with rollback_from / rollback_to / rollback_timestamp in its metadata. Answers
    # its storage id.
    def rollback(signature, to_version)
      answer = call(:post, "/signatures/#{seg(signature)}/rollback", query: sig_query,
                                                                      body: JSON.generate({ "to_version" => to_version.to_s }))
      @cache.expire_resolved(signature.to_s, "latest")
      answer["id"]
    end

    def delete(id, force: false)
      call(:delete, "/programs/#{seg(id)}", query: force ? { force: "true" } : nil, idempotent: true)
      @cache.forget_program(id.to_s)
      true
    end

    # Updates a program's metadata: `tags: {add: [...], remove: [...]}`, `environment:`,
    # `description:`, `expected_updated_at:` (compare-and-set) and any other key (kept verbatim,
    # searchable). Signature, version, project and content never change. Answers the new metadata.
    def update(id, changes)
      body = {}
      set = {}
      Wire.dump(changes).each do |key, value|
        case key
        when "tags"
          body["tags"] = value.is_a?(Array) ? { "add" => value } : value
        when "environment", "description", "expected_updated_at" then body[key] = value
        when "set" then set.merge!(value)
        else set[key] = value
        end
      end
      body["set"] = set unless set.empty?
      answer = call(:patch, "/programs/#{seg(id)}/metadata", body: JSON.generate(body),
                                                             idempotent: !body.key?("expected_updated_at"))
      @cache.forget_record(id.to_s)
      Wire.symbolize(answer)
    end

    # --- search and querying -------------------------------------------------------------------------

    # One page of search results. +criteria+: a query-language String (`"version:1.* method:miprov2
    # created:last_week"`) or the structured Hash of DSPy.rb's "Advanced Querying" (`signature:,
    # performance: {gte:}, created_at: {gte: Time}, optimization_method: [...], metadata: {...},
    # sort: [...], limit:`). Each result: id, signature, version, performance, created_at (Time),
    # metadata, relevance_score, summary.
    def search(criteria, limit: nil, sort: nil)
      search_page(criteria, limit: limit, sort: sort, cursor: nil).first
    end

    # Every match of a search, page by page (an Enumerator).
    def search_each(criteria, limit: nil, sort: nil)
      return enum_for(:search_each, criteria, limit: limit, sort: sort) unless block_given?

      cursor = nil
      loop do
        results, cursor = search_page(criteria, limit: limit, sort: sort, cursor: cursor)
        results.each { |r| yield r }
        break unless cursor
      end
    end

    # `{signature:, filters:, group_by:, metrics: {name: {avg: :performance}}}` → the groups, each
    # `{key:, <name>: value}`.
    def aggregate(request)
      body = with_project(Wire.dump(request))
      call(:post, "/aggregate", body: JSON.generate(body), idempotent: true)["groups"].map { |g| Wire.symbolize(g) }
    end

    # `{signature:, metric:, interval: :day, time_range: 30 days}` → the points, each `{t: Time, value:, count:}`.
    def time_series(request)
      body = with_project(Wire.dump(request.reject { |k, _| k.to_s == "time_range" }))
      tr = request[:time_range] || request["time_range"]
      body["time_range"] = Wire.duration(tr) if tr
      call(:post, "/time-series", body: JSON.generate(body), idempotent: true)["points"].map { |p| Wire.times(Wire.symbolize(p)) }
    end

    # Programs similar to one, most similar first (each with similarity and its components).
    def similar(id, threshold: 0.8, limit: 10)
      answer = call(:get, "/programs/#{seg(id)}/similar", query: { threshold: threshold, limit: limit }, idempotent: true)
      answer["results"].map { |r| Wire.times(Wire.symbolize(r)) }
    end

    # --- performance -----------------------------------------------------------------------------

    # Appends metric records (`{metrics:, timestamp:?, environment:?, record_id:?}`), 1000 a request.
    # A record without a record_id gets one, so that a retried append is stored once.
    def record_metrics(id, records)
      records = Array(records).map do |r|
        rec = Wire.dump(r)
        rec["record_id"] ||= "rb-#{SecureRandom.urlsafe_base64(18)}"
        rec
      end
      answers = records.each_slice(1000).map do |chunk|
        call(:post, "/programs/#{seg(id)}/metrics", body: JSON.generate({ "records" => chunk }), idempotent: true)
      end
      { program_id: id.to_s, recorded: answers.sum { |a| a["recorded"].to_i },
        already_recorded: answers.sum { |a| a["already_recorded"].to_i },
        ids: answers.flat_map { |a| a["ids"] || [] }, record_ids: records.map { |r| r["record_id"] } }
    end

    # A program's metric records, oldest first (every page): each with timestamp (Time), metrics
    # (symbol keys), environment, record_id, received_at.
    def metrics_history(id, from: nil, to: nil)
      query = { from: from && Wire.time(from), to: to && Wire.time(to), limit: 1000 }
      pages("/programs/#{seg(id)}/metrics", "records", query: query).map { |r| Wire.times(Wire.symbolize(r)) }
    end

    # The service's trends of a program's metrics over +days+ (GET /programs/{id}/trends).
    def trends(id, days: 90)
      Wire.times(Wire.symbolize(call(:get, "/programs/#{seg(id)}/trends", query: { days: Integer(days) }, idempotent: true)))
    end

    # --- monitoring --------------------------------------------------------------------------------

    # GET /report: total_programs, storage_size, recent_activity, top_signatures,
    # performance_trends, storage_health.
    def report
      Wire.times(Wire.symbolize(call(:get, "/report", idempotent: true)), depth: 6)
    end

    def count_programs
      report[:total_programs]
    end

    # Bytes of stored programs.
    def total_size
      report[:storage_size]
    end

    # Programs stored and metric records received in the last +seconds+ (whole UTC days, today
    # included; the service reports the last 7 days): `{days:, programs_stored:, metric_records:, by_day:}`.
    def recent_activity(seconds = 7 * 86_400)
      activity = report[:recent_activity]
      days = (Wire.seconds(seconds) / 86_400.0).ceil
      if days > activity[:days]
        raise ArgumentError, "the service reports activity of the last #{activity[:days]} days; #{days} days were asked"
      end

      by_day = activity[:by_day].last(days)
      { days: days, programs_stored: by_day.sum { |d| d[:programs_stored] },
        metric_records: by_day.sum { |d| d[:metric_records] }, by_day: by_day }
    end

    # Signatures by loads (most loaded first), each `{project:, signature:, programs:, bytes:, loads:, metric_records:}`.
    def top_signatures_by_usage
      report[:top_signatures][:by_loads]
    end

    # The 30-day metric trends of the signatures with the most programs.
    def performance_trends
      report[:performance_trends]
    end

    def health
      Wire.symbolize(call(:get, "/health", idempotent: true))
    end

    # --- retention, archive --------------------------------------------------------------------------

    # POST /maintenance/cleanup once (a run the service cut at its time limit answers
    # `complete: false` and a `next_cursor` to pass back as +cursor+).
    def cleanup(policy: nil, dry_run: true, as_of: nil, cursor: nil)
      body = { "dry_run" => dry_run ? true : false }
      body["policy"] = policy if policy
      body["as_of"] = Wire.time(as_of) if as_of
      body["cursor"] = cursor if cursor
      answer = Wire.times(Wire.symbolize(call(:post, "/maintenance/cleanup", body: JSON.generate(body), idempotent: dry_run)))
      answer[:deleted].each { |d| @cache.forget_program(d[:id]) } unless dry_run
      answer[:archived].each { |d| @cache.forget_record(d[:id]) } unless dry_run
      answer
    end

    # Moves a program's blob to cold storage (loads then answer Archived).
    def archive(id)
      answer = call(:post, "/programs/#{seg(id)}/archive")
      @cache.forget_record(id.to_s)
      Wire.times(Wire.symbolize(answer))
    end

    # Brings an archived program back (`status` "active", or "restoring" while S3 retrieves it).
    def restore(id)
      answer = call(:post, "/programs/#{seg(id)}/restore")
      @cache.forget_record(id.to_s)
      Wire.times(Wire.symbolize(answer))
    end

    # --- backups ---------------------------------------------------------------------------------------

    # POST /backups: the answer (status 201), or `{status: "in_progress"}` (202) when the service
    # stopped at its deadline.
    def create_backup(name = nil)
      body = name ? JSON.generate({ "name" => name.to_s }) : nil
      Wire.times(Wire.symbolize(call(:post, "/backups", body: body)))
    end

    def list_backups
      call(:get, "/backups", idempotent: true)["backups"].map { |b| Wire.times(Wire.symbolize(b)) }
    end

    def backup_manifest(name)
      Wire.times(Wire.symbolize(call(:get, "/backups/#{seg(name)}", idempotent: true)))
    end

    def restore_backup(name, verify_compatibility: true)
      answer = call(:post, "/backups/#{seg(name)}/restore",
                    body: JSON.generate({ "verify_compatibility" => verify_compatibility ? true : false }))
      @cache.expire_all_resolved
      Wire.symbolize(answer)
    end

    # --- plumbing ----------------------------------------------------------------------------------------

    # Sends a request and answers its JSON (Error raised for an error answer).
    def call(method, path, query: nil, body: nil, headers: {}, idempotent: false)
      online!("#{method.to_s.upcase} #{path}")
      res = @transport.request(method, path, query: query, body: body, headers: headers, idempotent: idempotent)
      raise error_of(res) unless res.status.between?(200, 299)

      res.json
    end

    private

    def seg(value)
      Transport.segment(value)
    end

    def sig_query
      @project ? { project: @project } : nil
    end

    def with_project(body)
      body["project"] ||= @project if @project && !(body["filters"].is_a?(Hash) && body["filters"]["project"])
      body
    end

    def online!(what)
      raise Unavailable.new("offline: true and #{what} is not in the cache", code: "unavailable") if @offline
    end

    def error_of(res)
      body = begin
        res.json
      rescue JSON::ParserError
        nil
      end
      Error.from_answer(res.status, body)
    end

    def log_warn(message)
      @logger ? @logger.warn(message) : Kernel.warn(message)
    end

    def pages(path, key, query: nil)
      items = []
      cursor = nil
      loop do
        answer = call(:get, path, query: (query || {}).merge(cursor: cursor), idempotent: true)
        items.concat(answer[key] || [])
        cursor = answer["next_cursor"]
        break unless cursor
      end
      items
    end

    def search_page(criteria, limit:, sort:, cursor:)
      answer = if criteria.is_a?(String)
                 query = { q: criteria, limit: limit, sort: sort, cursor: cursor, project: @project }
                 call(:get, "/search", query: query, idempotent: true)
               else
                 body = with_project(Wire.dump(criteria))
                 body["limit"] = limit if limit
                 body["sort"] = Wire.dump(sort) if sort
                 body["cursor"] = cursor if cursor
                 call(:post, "/search", body: JSON.generate(body), idempotent: true)
               end
      [answer["results"].map { |r| Wire.times(Wire.symbolize(r)) }, answer["next_cursor"]]
    end

    def program_bytes(program)
      case program
      when String
        text = program.dup.force_encoding(Encoding::UTF_8).strip
        raise ArgumentError, "program is a String but not UTF-8 JSON" unless text.valid_encoding?

        begin
          JSON.parse(text)
        rescue JSON::ParserError => e
          raise ArgumentError, "program is a String but not JSON: #{e.message}"
        end
        text
      when Hash, Array then JSON.generate(Wire.dump(program))
      else
        raise TypeError, "program must respond to #to_h (a DSPy.rb module), or be a Hash or a JSON String" unless program.respond_to?(:to_h)

        JSON.generate(Wire.dump(program.to_h))
      end
    end

    def derived_signature(program, bytes)
      if !program.is_a?(Hash) && !program.is_a?(String) && program.respond_to?(:signature_class)
        klass = program.signature_class
        return klass.respond_to?(:name) ? klass.name : klass.to_s
      end
      state = JSON.parse(bytes)
      return nil unless state.is_a?(Hash)

      state.dig("program_data", "state", "signature_class") || state.dig("state", "signature_class") || state["signature_class"]
    rescue JSON::ParserError
      nil
    end

    def metadata_view(record)
      Wire.times(Wire.symbolize(record.reject { |k, _| k == "metadata" })).merge(metadata: Wire.symbolize(record["metadata"] || {}))
    end

    # A GET of an exact-bytes route (with If-None-Match when +etag+): 200 or 304, else raised.
    def get_bytes(path, query: nil, etag: nil)
      headers = etag ? { "if-none-match" => "\"#{etag}\"" } : {}
      res = @transport.request(:get, path, query: query, headers: headers, idempotent: true)
      raise error_of(res) unless res.status == 200 || res.status == 304

      res
    end

    # The verified bytes of a 200 answer of an exact-bytes route.
    def verified_body(res)
      bytes = res.body.b
      sha = Digest::SHA256.hexdigest(bytes)
      claimed = res.header("x-dspy-sha256")
      unless claimed == sha
        raise IntegrityError.new("the service sent #{bytes.bytesize} bytes hashing to #{sha[0, 12]}..., not to #{claimed.to_s[0, 12]}... as its header says")
      end

      bytes.force_encoding(Encoding::UTF_8)
    end

    # The record of a program: the cached one when it is for these bytes, else from the service;
    # its sha256 must be the bytes' hash.
    def record_for(id, sha)
      record = @cache.record(id)
      return record if record && record["sha256"] == sha

      record = call(:get, "/programs/#{seg(id)}/metadata", idempotent: true)
      unless record["sha256"] == sha
        raise IntegrityError.new("program #{id}: the record's sha256 #{record["sha256"].to_s[0, 12]}... is not the hash of the bytes served (#{sha[0, 12]}...)")
      end

      record
    end

    # The cached [record, bytes] of a program (bytes verified), or nil.
    def cached(id)
      record = @cache.record(id)
      bytes = record && @cache.blob(record["sha256"])
      bytes && [record, bytes.dup.force_encoding(Encoding::UTF_8)]
    end

    def cached_program(id, into)
      record, bytes = cached(id)
      record && StoredProgram.new(record: record, bytes: bytes, into: into, source: :cache)
    end

    def fetched(res, into)
      bytes = verified_body(res)
      record = record_for(res.header("x-dspy-program-id"), res.header("x-dspy-sha256"))
      @cache.put_program(record, bytes)
      StoredProgram.new(record: record, bytes: bytes, into: into, source: :server)
    end

    # `latest` or an alias: the cached target within cache_ttl, else asked again (If-None-Match with
    # the cached target's hash); the last known target, stale, when the service is unreachable.
    def resolve(signature, selector, into)
      entry = @cache.resolved(signature, selector)
      now = Time.now.to_f
      if entry && now - entry["resolved_at"].to_f < @cache_ttl
        hit = cached_program(entry["id"], into)
        return hit if hit
      end
      if @offline
        record, bytes = entry && cached(entry["id"])
        raise Unavailable.new("offline: true and no cached target for #{signature} #{selector}; prefetch it first", code: "unavailable") unless record

        return StoredProgram.new(record: record, bytes: bytes, into: into, source: :cache, stale: true)
      end
      begin
        refresh(signature, selector, entry, into, now)
      rescue NotFound
        @cache.forget_resolved(signature, selector) # gone: never answered again while the service is down
        raise
      rescue Error => e
        raise unless e.is_a?(Unavailable) || e.status.to_i >= 500

        record, bytes = entry && cached(entry["id"])
        raise unless record

        log_warn("dspy-storage: #{signature} #{selector.sub("alias:", "alias ")}: the service is unavailable (#{e.message}); " \
                 "answering v#{record["version"]} (#{record["id"]}) resolved at #{Time.at(entry["resolved_at"].to_f).utc.iso8601} (stale)")
        StoredProgram.new(record: record, bytes: bytes, into: into, source: :cache, stale: true)
      end
    end

    def refresh(signature, selector, entry, into, now)
      path = if selector == "latest"
               "/signatures/#{seg(signature)}/versions/latest/program"
             else
               "/signatures/#{seg(signature)}/aliases/#{seg(selector.delete_prefix("alias:"))}/program"
             end
      known = entry && @cache.blob(entry["sha256"]) ? entry["sha256"] : nil
      res = get_bytes(path, query: sig_query, etag: known)
      id = res.header("x-dspy-program-id")
      sha = res.header("x-dspy-sha256")
      bytes = res.status == 304 ? @cache.blob(sha) : verified_body(res)
      bytes ||= verified_body(get_bytes(path, query: sig_query)) # the cached copy went away meanwhile
      record = record_for(id, sha)
      @cache.put_program(record, bytes)
      @cache.put_resolved(signature, selector, id, sha, now)
      StoredProgram.new(record: record, bytes: bytes.dup.force_encoding(Encoding::UTF_8), into: into,
                        source: res.status == 304 ? :cache : :server)
    end
  end
end
