# frozen_string_literal: true

require "socket"
require "net/http"

# A tiny HTTP/1.1 server on a free port for what no real server does on demand: scripted answers
# (429 / 503 to test retries), capturing requests exactly as sent (SigV4), and a proxy in front of
# a real server that loses chosen answers after the request went through (ambiguous failures).
class StubHTTP
  Request = Struct.new(:method, :target, :headers, :body, keyword_init: true) do
    def path
      target.split("?", 2).first
    end

    def query
      target.split("?", 2)[1].to_s
    end
  end

  attr_reader :requests, :port

  # +handler+ gets each Request and answers [status, headers, body], or :drop to close the
  # connection without an answer.
  def initialize(&handler)
    @handler = handler
    @requests = Queue.new
    @server = TCPServer.new("127.0.0.1", 0)
    @port = @server.addr[1]
    @threads = []
    @thread = Thread.new { accept_loop }
  end

  def url
    "http://127.0.0.1:#{@port}"
  end

  def captured
    list = []
    list << @requests.pop until @requests.empty?
    list
  end

  def close
    @server.close
    @thread.kill
    @threads.each(&:kill)
  end

  # A handler that forwards to +upstream+ (a URL); +drop+ decides, after forwarding, whether the
  # answer is lost (the connection closed instead).
  def self.proxy(upstream, &drop)
    uri = URI(upstream)
    new do |req|
      http = Net::HTTP.new(uri.host, uri.port)
      forward = Net::HTTPGenericRequest.new(req.method, !req.body.empty?, true, req.target)
      req.headers.each { |k, v| forward[k] = v unless %w[host connection content-length].include?(k) }
      forward.body = req.body unless req.body.empty?
      res = http.request(forward)
      if drop&.call(req, res)
        :drop
      else
        [res.code.to_i, { "content-type" => res["content-type"].to_s }.merge(res.to_hash.slice("etag").transform_values(&:first))
                                                                      .merge(res.to_hash.select { |k, _| k.start_with?("x-dspy-") }.transform_values(&:first)),
         res.body.to_s]
      end
    end
  end

  private

  def accept_loop
    loop do
      client = @server.accept
      @threads << Thread.new(client) { |c| serve(c) }
    end
  rescue IOError, Errno::EBADF
    nil
  end

  def serve(client)
    loop do
      line = client.gets
      break if line.nil?

      method, target, = line.split(" ", 3)
      headers = {}
      while (h = client.gets) && h != "\r\n"
        k, v = h.split(":", 2)
        headers[k.strip.downcase] = v.strip
      end
      body = headers["content-length"] ? client.read(headers["content-length"].to_i) : ""
      req = Request.new(method: method, target: target, headers: headers, body: body)
      @requests << req
      answer = @handler.call(req)
      if answer == :drop
        client.close
        break
      end
      status, res_headers, res_body = answer
      res_body = res_body.to_s
      out = +"HTTP/1.1 #{status} Stub\r\n"
      res_headers.merge("content-length" => res_body.bytesize.to_s).each { |k, v| out << "#{k}: #{v}\r\n" }
      out << "\r\n" << res_body
      client.write(out)
    end
  rescue IOError, SystemCallError
    nil
  ensure
    client.close unless client.closed?
  end
end
