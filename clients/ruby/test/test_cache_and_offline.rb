# frozen_string_literal: true

require_relative "test_helper"

# Caching and offline behaviour: immutable loads from memory and disk, verified on every read;
# latest/alias resolutions for cache_ttl; the last resolved target (stale) while the service is
# down; offline mode. Each test that stops its server has a server of its own.
class TestCacheAndOffline < StorageTest
  def fresh_server
    @own = TestServer.new.start
  end

  def teardown
    @own&.destroy
    super
  end

  def client(srv, **options)
    DSPyStorage::ProgramStorage.new(url: srv.url, project: @project, cache_dir: @cache_dir, **options)
  end

  def seed(s, versions = %w[1.0.0 1.1.0])
    versions.to_h do |v|
      [v, s.store(program: ClassifyTextPredictor.new(instruction: "version #{v}").to_h,
                  metadata: { signature: "ClassifyText", version: v })]
    end
  end

  def loads_counted(srv)
    entry = srv.get("/report")["top_signatures"]["by_loads"].find { |t| t["signature"] == "ClassifyText" && t["project"] == @project }
    entry ? entry["loads"] : 0
  end

  def test_pinned_loads_come_from_memory_then_disk_and_need_no_service
    srv = fresh_server
    s = client(srv)
    ids = seed(s)
    first = s.load(ids["1.0.0"])
    assert_equal :server, first.source
    assert_equal :cache, s.load(ids["1.0.0"]).source
    assert_equal :server, s.load_version("ClassifyText", "1.1.0").source
    before = loads_counted(srv)
    assert_equal :cache, s.load_version("ClassifyText", "1.1.0").source
    assert_equal before, loads_counted(srv), "a cached pinned load sends no request"

    srv.stop
    assert_equal first.bytes, s.load(ids["1.0.0"]).bytes, "from memory"
    other = client(srv) # a new process: nothing in memory
    from_disk = other.load(ids["1.0.0"])
    assert_equal :cache, from_disk.source
    assert_equal false, from_disk.stale, "an immutable version is never stale"
    assert_equal first.bytes, from_disk.bytes
    assert_equal first.metadata, from_disk.metadata
    assert_equal ids["1.1.0"], other.load_version("ClassifyText", "1.1.0").id
    error = assert_raises(DSPyStorage::Unavailable) { other.load("01a23885-0000-7000-8000-000000000000") }
    assert_nil error.status
    assert_equal "unavailable", error.code
  end

  def test_alias_and_latest_resolve_once_per_ttl_and_own_writes_at_once
    s = storage(cache_ttl: 1)
    ids = seed(s)
    s.set_alias("ClassifyText", "production", "1.0.0")
    assert_equal ids["1.0.0"], s.load_alias("ClassifyText", "production").id
    # Another process moves the alias: seen after the TTL, not before.
    server.json(:put, "/signatures/ClassifyText/aliases/production?#{q(project: @project)}", body: { version: "1.1.0" })
    cached = s.load_alias("ClassifyText", "production")
    assert_equal ids["1.0.0"], cached.id
    assert_equal :cache, cached.source
    sleep 1.1
    moved = s.load_alias("ClassifyText", "production")
    assert_equal ids["1.1.0"], moved.id
    assert_equal :server, moved.source
    # After the TTL an unchanged target is revalidated (If-None-Match → 304), not sent again.
    sleep 1.1
    same = s.load_alias("ClassifyText", "production")
    assert_equal ids["1.1.0"], same.id
    assert_equal :cache, same.source
    status, = server.raw(:get, "/signatures/ClassifyText/aliases/production/program?#{q(project: @project)}",
                         headers: { "if-none-match" => "\"#{same.sha256}\"" })
    assert_equal 304, status

    # The client's own writes are seen at once.
    s.set_alias("ClassifyText", "production", "1.0.0")
    assert_equal ids["1.0.0"], s.load_alias("ClassifyText", "production").id
    assert_equal ids["1.1.0"], s.load_version("ClassifyText", "latest").id
    newer = s.store(program: { v: 2 }, metadata: { signature: "ClassifyText", version: "2.0.0" })
    assert_equal newer, s.load_version("ClassifyText", :latest).id
    # Another process's store: after the TTL.
    other = store_raw({ v: 3 }, { signature: "ClassifyText", version: "3.0.0" })["id"]
    assert_equal newer, s.load_version("ClassifyText", "latest").id
    sleep 1.1
    assert_equal other, s.load_version("ClassifyText", "latest").id
  end

  def test_service_down_answers_the_last_resolved_target_stale
    srv = fresh_server
    s = client(srv, cache_ttl: 0)
    ids = seed(s)
    s.set_alias("ClassifyText", "production", "1.0.0")
    live = s.load_alias("ClassifyText", "production")
    latest = s.load_version("ClassifyText", "latest")
    assert_equal false, live.stale
    # An alias the service says is gone is forgotten: not answered while the service is down.
    s.set_alias("ClassifyText", "canary", "1.1.0")
    s.load_alias("ClassifyText", "canary")
    srv.json(:delete, "/signatures/ClassifyText/aliases/canary?#{q(project: @project)}")
    assert_raises(DSPyStorage::NotFound) { s.load_alias("ClassifyText", "canary") }

    srv.stop
    down, warning = capture_stderr { s.load_alias("ClassifyText", "production") }
    assert_equal true, down.stale
    assert_equal live.bytes, down.bytes
    assert_equal ids["1.0.0"], down.id
    assert_match(/ClassifyText alias production: the service is unavailable .* \(stale\)/, warning)
    down_latest, = capture_stderr { s.load_version("ClassifyText", "latest") }
    assert_equal [ids["1.1.0"], true], [down_latest.id, down_latest.stale]
    assert_equal latest.bytes, down_latest.bytes

    assert_raises(DSPyStorage::Unavailable) { s.load_alias("ClassifyText", "canary") }
    # A new process (nothing in memory) answers the same from disk.
    fresh = client(srv, cache_ttl: 0)
    from_disk, = capture_stderr { fresh.load_alias("ClassifyText", "production", into: ClassifyTextPredictor) }
    assert_equal true, from_disk.stale
    assert_equal "version 1.0.0", from_disk.program.instruction
    # Nothing known: the failure itself.
    assert_raises(DSPyStorage::Unavailable) { fresh.load_alias("ClassifyText", "staging") }

    # Back up: fresh answers again.
    srv.restart
    back = fresh.load_alias("ClassifyText", "production")
    assert_equal false, back.stale
    assert_equal ids["1.0.0"], back.id
  end

  def test_offline_never_asks_the_service
    s = storage(cache_ttl: 0)
    ids = seed(s)
    s.set_alias("ClassifyText", "production", "1.1.0")
    s.load_alias("ClassifyText", "production")
    s.load(ids["1.0.0"])
    before = loads_counted(server)
    off = storage(offline: true)
    hit = off.load_alias("ClassifyText", "production")
    assert_equal [ids["1.1.0"], false], [hit.id, hit.stale], "resolved within cache_ttl: not stale"
    hit = storage(offline: true, cache_ttl: 0).load_alias("ClassifyText", "production")
    assert_equal [ids["1.1.0"], true], [hit.id, hit.stale], "past cache_ttl: stale"
    assert_equal ids["1.0.0"], off.load(ids["1.0.0"]).id
    error = assert_raises(DSPyStorage::Unavailable) { off.load_version("ClassifyText", "latest") }
    assert_match(/offline/, error.message)
    assert_raises(DSPyStorage::Unavailable) { off.store(program: {}, metadata: { signature: "ClassifyText" }) }
    assert_equal before, loads_counted(server), "offline loads sent nothing"
    # prefetch fills the cache for a process that starts while the service is down.
    s.prefetch("ClassifyText", "latest")
    assert_equal ids["1.1.0"], storage(offline: true).load_version("ClassifyText", "latest").id
  end

  def test_a_tampered_cache_file_is_an_integrity_error_and_is_dropped
    s = storage
    ids = seed(s)
    loaded = s.load(ids["1.0.0"])
    blob = Dir.glob(File.join(@cache_dir, "*", "blobs", "#{loaded.sha256}.json")).first
    refute_nil blob
    File.binwrite(blob, loaded.bytes.sub("version 1.0.0", "version 6.6.6"))
    other = storage
    error = assert_raises(DSPyStorage::IntegrityError) { other.load(ids["1.0.0"]) }
    assert_match(/does not match its SHA-256/, error.message)
    refute File.exist?(blob), "the bad entry is removed"
    again = other.load(ids["1.0.0"])
    assert_equal :server, again.source
    assert_equal loaded.bytes, again.bytes
  end

  def test_a_blob_corrupted_on_the_server_is_its_422
    s = storage
    id = s.store(program: { instructions: "x" * 200 }, metadata: { signature: "Corrupt" })
    if server.backend == "aws"
      key = AwsTestApi.list_keys(server.bucket, "programs/").find { |k| k.include?(id) }
      refute_nil key
      AwsTestApi.put_object(server.bucket, key, "not what was stored")
    else
      file = Dir.glob(File.join(server.data_dir, "programs", "**", "#{id}.json*")).first
      refute_nil file
      bytes = File.binread(file)
      bytes.setbyte(bytes.bytesize / 2, bytes.getbyte(bytes.bytesize / 2) ^ 0xff)
      File.binwrite(file, bytes)
    end
    assert_equal 422, server.raw(:get, "/programs/#{id}/program").first
    error = assert_raises(DSPyStorage::IntegrityError) { storage.load(id) }
    assert_equal 422, error.status
    assert_equal "integrity_error", error.code
    assert Dir.glob(File.join(@cache_dir, "*", "blobs", "*.json")).none? { |f| File.binread(f).include?("xxxx") }
  end

  def test_cache_namespaces_keep_projects_apart
    a = storage
    b = DSPyStorage::ProgramStorage.new(url: server.url, project: "#{@project}-b", cache_dir: @cache_dir)
    a.store(program: { who: "a" }, metadata: { signature: "Shared", version: "1.0.0" })
    b.store(program: { who: "b" }, metadata: { signature: "Shared", version: "1.0.0" })
    assert_equal "a", a.load_version("Shared", "1.0.0").program[:who]
    assert_equal "b", b.load_version("Shared", "1.0.0").program[:who]
    assert_equal "a", storage.load_version("Shared", "1.0.0").program[:who]
  end

  def test_concurrent_loads_from_threads
    s = storage(cache_ttl: 0)
    ids = seed(s)
    s.set_alias("ClassifyText", "production", "1.0.0")
    expected = raw_bytes(ids["1.0.0"]).first
    results = Array.new(8) do
      Thread.new do
        Array.new(10) { [s.load_alias("ClassifyText", "production").bytes, s.load(ids["1.0.0"]).bytes] }
      end
    end.flat_map(&:value)
    assert_equal 80, results.size
    assert(results.all? { |a, b| a == expected && b == expected })
  end
end
