# frozen_string_literal: true

require "json"
require "net/http"
require "securerandom"
require "socket"
require "tmpdir"
require "fileutils"
require_relative "aws"

# A real `dspy-storage serve` for the tests: the workspace's binary ($DSPY_STORAGE_BIN, else
# target/debug/dspy-storage), on a free port, on the backend of $DSPY_STORAGE_TEST_BACKEND
# (`embedded`, or `aws` against the local AWS of AWS_ENDPOINT_URL). Raw HTTP helpers read the
# server's own answers, independently of the client, to check the client against them.
class TestServer
  REPO = File.expand_path("../../../..", __dir__)
  BIN = ENV["DSPY_STORAGE_BIN"] || File.join(REPO, "target", "debug", "dspy-storage")
  BACKEND = ENV.fetch("DSPY_STORAGE_TEST_BACKEND", "embedded")
  ROOT = Dir.mktmpdir("dspy-storage-rb-")

  attr_reader :url, :port, :data_dir, :table, :bucket, :backend, :log

  @all = []
  @shared = nil

  class << self
    attr_reader :all

    # One server for the tests that share a store (each of them works in its own project); a
    # child test process attaches to its parent's ($DSPY_STORAGE_TEST_SERVER_URL).
    def shared
      @shared ||= ENV["DSPY_STORAGE_TEST_SERVER_URL"] ? attach(ENV["DSPY_STORAGE_TEST_SERVER_URL"]) : new.start
    end

    def attach(url)
      server = allocate
      server.instance_variable_set(:@url, url)
      server.instance_variable_set(:@backend, BACKEND)
      server
    end

    def stop_all
      @all.each(&:destroy)
      FileUtils.rm_rf(ROOT)
    end
  end

  def initialize(backend: BACKEND, args: [])
    raise "no dspy-storage binary at #{BIN} (cargo build -p dspy-storage-cli, or set DSPY_STORAGE_BIN)" unless File.executable?(BIN)

    @backend = backend
    @args = args
    name = "rbtest-#{SecureRandom.hex(6)}"
    @data_dir = File.join(ROOT, name)
    @table = name
    @bucket = name
    @log = File.join(ROOT, "#{name}.log")
    self.class.all << self
  end

  def backend_args
    if @backend == "aws"
      raise "the aws backend needs AWS_ENDPOINT_URL (source the local AWS env)" unless ENV["AWS_ENDPOINT_URL"]

      ["--backend", "aws", "--table", @table, "--bucket", @bucket, "--create"]
    else
      ["--backend", "embedded", "--data-dir", @data_dir]
    end
  end

  def start
    attempts = 0
    begin
      attempts += 1
      @port = free_port
      @url = "http://127.0.0.1:#{@port}"
      @pid = Process.spawn(BIN, "serve", *backend_args, "--addr", "127.0.0.1:#{@port}", *@args,
                           out: [@log, "a"], err: [@log, "a"], pgroup: true)
      wait_healthy
    rescue RuntimeError
      stop
      retry if attempts < 3
      raise
    end
    self
  end

  def running?
    !@pid.nil?
  end

  def stop
    return unless @pid

    begin
      Process.kill("TERM", @pid)
      deadline = Time.now + 10
      until Process.wait(@pid, Process::WNOHANG)
        if Time.now > deadline
          Process.kill("KILL", @pid)
          Process.wait(@pid)
          break
        end
        sleep 0.05
      end
    rescue Errno::ESRCH, Errno::ECHILD
      nil
    end
    @pid = nil
  end

  # Starts again on the same data (and a new port unless +same_port+).
  def restart(same_port: true)
    stop
    port = @port
    @pid = Process.spawn(BIN, "serve", *backend_args, "--addr", "127.0.0.1:#{port}", *@args,
                         out: [@log, "a"], err: [@log, "a"], pgroup: true)
    wait_healthy
    self
  end

  # Stops and removes what it made (the table and bucket on AWS).
  def destroy
    stop
    return unless @backend == "aws" && @table

    AwsTestApi.delete_table(@table)
    AwsTestApi.delete_bucket(@bucket)
  rescue StandardError => e
    warn "test cleanup of #{@table}: #{e.message}"
  end

  # --- raw HTTP (the server's own answers) ------------------------------------------------------

  def raw(method, path, body: nil, headers: {})
    uri = URI("#{@url}#{path}")
    Net::HTTP.start(uri.host, uri.port, read_timeout: 60) do |http|
      req = Net::HTTPGenericRequest.new(method.to_s.upcase, !body.nil?, true, uri.request_uri)
      req["content-type"] = "application/json" if body
      headers.each { |k, v| req[k] = v }
      req.body = body.is_a?(String) ? body : JSON.generate(body) if body
      res = http.request(req)
      [res.code.to_i, res.each_header.to_h, res.body.to_s]
    end
  end

  # The JSON of a 2xx answer (fails otherwise).
  def json(method, path, body: nil, headers: {})
    status, _, text = raw(method, path, body: body, headers: headers)
    raise "#{method.upcase} #{path} answered #{status}: #{text}" unless status.between?(200, 299)

    text.empty? ? nil : JSON.parse(text)
  end

  def get(path)
    json(:get, path)
  end

  def tail_log(lines = 30)
    File.exist?(@log) ? File.readlines(@log).last(lines).join : ""
  end

  private

  def free_port
    server = TCPServer.new("127.0.0.1", 0)
    server.addr[1]
  ensure
    server&.close
  end

  def wait_healthy
    deadline = Time.now + (@backend == "aws" ? 90 : 30)
    loop do
      raise "dspy-storage serve exited: #{tail_log}" if Process.wait(@pid, Process::WNOHANG)

      begin
        status, = raw(:get, "/health")
        return if status == 200
      rescue SystemCallError, IOError, Net::ReadTimeout
        nil
      end
      raise "dspy-storage serve did not answer on #{@url}: #{tail_log}" if Time.now > deadline

      sleep 0.1
    end
  end
end

Minitest.after_run { TestServer.stop_all } if defined?(Minitest)
