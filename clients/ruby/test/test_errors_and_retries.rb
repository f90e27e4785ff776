# frozen_string_literal: true

require_relative "test_helper"
require_relative "support/stub_http"

# Every error class from a real server's answer (Throttled from a stub: no real server throttles
# on demand), retries of idempotent requests only, and answers lost after the request went through.
class TestErrorsAndRetries < StorageTest
  def assert_error(klass, status, code, field = nil)
    error = assert_raises(klass) { yield }
    assert_kind_of DSPyStorage::Error, error
    assert_equal status, error.status
    assert_equal code, error.code
    assert_equal field, error.field if field
    error
  end

  def test_error_classes_from_the_server
    s = storage
    id = s.store(program: { a: 1 }, metadata: { signature: "Errors", version: "1.0.0" })
    assert_error(DSPyStorage::NotFound, 404, "not_found") { s.load("01a23885-0000-7000-8000-000000000000") }
    assert_error(DSPyStorage::NotFound, 404, "not_found") { s.load_version("Errors", "7.0.0") }
    assert_error(DSPyStorage::InvalidRequest, 400, "invalid_request", "metadata.version") do
      s.store(program: { a: 2 }, metadata: { signature: "Errors", version: "one" })
    end
    assert_error(DSPyStorage::InvalidRequest, 400, "invalid_request", "metadata.signature") do
      s.store(program: { a: 2 }, metadata: {})
    end
    assert_error(DSPyStorage::Conflict, 409, "conflict") do
      s.store(program: { a: 3 }, metadata: { signature: "Errors", version: "1.0.0" })
    end
    s.set_alias("Errors", "production", "1.0.0")
    assert_error(DSPyStorage::Conflict, 409, "conflict") { s.delete(id) }
    s.archive(id)
    assert_error(DSPyStorage::Archived, 409, "archived") { s.load(id) }
    big = { blob: "x" * (5 * 1024 * 1024 + 10) }
    assert_error(DSPyStorage::PayloadTooLarge, 413, "payload_too_large") do
      s.store(program: big, metadata: { signature: "Errors" })
    end
    assert_equal 1, server.get("/signatures/Errors/versions?#{q(project: @project)}")["versions"].size, "nothing left behind"
  end

  def test_unauthenticated_and_forbidden_with_access_control_on
    tokens = { "reader-token" => "reader", "writer-token" => "writer" }
    file = File.join(@cache_dir, "auth.toml")
    File.write(file, tokens.map do |token, role|
      "[[token]]\nname = \"#{role}\"\nsha256 = \"#{Digest::SHA256.hexdigest(token)}\"\nprojects = [\"#{@project}\"]\nrole = \"#{role}\"\n"
    end.join("\n"))
    srv = TestServer.new(args: ["--auth-file", file]).start
    begin
      anonymous = DSPyStorage::ProgramStorage.new(url: srv.url, project: @project, cache_dir: false)
      assert_error(DSPyStorage::Unauthenticated, 401, "unauthenticated") { anonymous.list_signatures }
      writer = DSPyStorage::ProgramStorage.new(url: srv.url, project: @project, cache_dir: false, token: "writer-token")
      id = writer.store(program: { a: 1 }, metadata: { signature: "Guarded" })
      reader = DSPyStorage::ProgramStorage.new(url: srv.url, project: @project, cache_dir: false, token: "reader-token")
      assert_equal id, reader.load(id).id
      assert_error(DSPyStorage::Forbidden, 403, "forbidden") { reader.store(program: { a: 2 }, metadata: { signature: "Guarded" }) }
      assert_error(DSPyStorage::Forbidden, 403, "forbidden") { DSPyStorage::BackupManager.new(writer).create_backup }
      elsewhere = DSPyStorage::ProgramStorage.new(url: srv.url, project: "not-mine", cache_dir: false, token: "reader-token")
      assert_error(DSPyStorage::NotFound, 404, "not_found") { elsewhere.load_version("Guarded", "latest") }
    ensure
      srv.destroy
    end
  end

  def test_unreachable_service_is_unavailable
    port = TCPServer.new("127.0.0.1", 0).then { |t| t.addr[1].tap { t.close } }
    waits = []
    s = DSPyStorage::ProgramStorage.new(url: "http://127.0.0.1:#{port}", cache_dir: false, sleeper: ->(w) { waits << w })
    error = assert_raises(DSPyStorage::Unavailable) { s.list_signatures }
    assert_nil error.status
    assert_match(/unreachable/, error.message)
    assert_equal 3, waits.size, "an idempotent request is tried 1 + 3 times"
    waits.clear
    assert_raises(DSPyStorage::Unavailable) { s.rollback("X", "1.0.0") }
    assert_empty waits, "a rollback is never sent twice"
  end

  def test_throttled_and_unavailable_answers_are_retried_for_idempotent_requests_only
    script = []
    stub = StubHTTP.new do |_req|
      status, headers = script.shift || [200, {}]
      body = status == 200 ? '{"project":"default","signatures":[{"signature":"S"}],"next_cursor":null}' : %({"error":{"code":"#{status == 429 ? "throttled" : "unavailable"}","message":"busy"}})
      [status, { "content-type" => "application/json" }.merge(headers || {}), body]
    end
    waits = []
    s = DSPyStorage::ProgramStorage.new(url: stub.url, cache_dir: false, sleeper: ->(w) { waits << w })

    script.replace([[429, {}], [503, {}]])
    assert_equal ["S"], s.list_signatures
    assert_equal 3, stub.captured.size
    assert_equal 2, waits.size

    script.replace(Array.new(4) { [429, {}] })
    assert_error(DSPyStorage::Throttled, 429, "throttled") { s.list_signatures }
    assert_equal 4, stub.captured.size, "1 + retries attempts"

    waits.clear
    script.replace([[429, { "retry-after" => "2" }]])
    s.list_signatures
    assert_equal [2.0], waits, "Retry-After is honoured"
    assert_equal 2, stub.captured.size

    script.replace([[503, {}]])
    assert_error(DSPyStorage::Unavailable, 503, "unavailable") { s.rollback("S", "1.0.0") }
    assert_equal 1, stub.captured.size, "a rollback is not retried"
    script.replace([[503, {}]])
    assert_error(DSPyStorage::Unavailable, 503, "unavailable") { s.set_alias("S", "prod", "1.0.0", expected_version: "0.9.0") }
    assert_equal 1, stub.captured.size, "a compare-and-set is not retried"
  ensure
    stub&.close
  end

  # The answer is lost after the server did the work: the retry of a store (same Idempotency-Key)
  # and of a metric append (same record id) changes nothing.
  def test_lost_answers_of_stores_and_appends_are_retried_safely
    lost = Hash.new(0)
    proxy = StubHTTP.proxy(server.url) do |req, _res|
      key = [req.method, req.path.sub(/[0-9a-f-]{36}/, "ID")]
      drop = %w[POST PUT].include?(req.method) && lost[key].zero?
      lost[key] += 1
      drop
    end
    s = DSPyStorage::ProgramStorage.new(url: proxy.url, project: @project, cache_dir: false, sleeper: ->(_) {})
    id = s.store(program: { a: 1 }, metadata: { signature: "Lossy" })
    assert_equal 2, lost[["POST", "/programs"]], "sent twice"
    versions = server.get("/signatures/Lossy/versions?#{q(project: @project)}")["versions"]
    assert_equal [id], versions.map { |v| v["id"] }, "one version"

    answer = DSPyStorage::PerformanceStorage.new(s).record_performance(id, { accuracy: 0.7 })
    assert_equal 2, lost[["POST", "/programs/ID/metrics"]]
    assert_equal 1, answer[:already_recorded], "the retry found the record written"
    assert_equal 1, server.get("/programs/#{id}/metrics")["records"].size

    # A compare-and-set alias move whose answer is lost is not sent again (by the client or by
    # Net::HTTP's own retry of PUTs): the caller sees Unavailable and decides.
    s.set_alias("Lossy", "production", "1.0.0") # a plain PUT: its lost answer is retried
    assert_equal 2, lost[["PUT", "/signatures/Lossy/aliases/production"]]
    s.store(program: { a: 2 }, metadata: { signature: "Lossy", version: "1.0.1" })
    lost.delete(["PUT", "/signatures/Lossy/aliases/production"])
    assert_raises(DSPyStorage::Unavailable) { s.set_alias("Lossy", "production", "1.0.1", expected_version: "1.0.0") }
    assert_equal 1, lost[["PUT", "/signatures/Lossy/aliases/production"]]
    assert_equal "1.0.1", server.get("/signatures/Lossy/aliases/production?#{q(project: @project)}")["version"]
  ensure
    proxy&.close
  end
end
