# frozen_string_literal: true

$LOAD_PATH.unshift File.expand_path("../lib", __dir__)

require "minitest/autorun"
require "digest"
require "json"
require "securerandom"
require "tmpdir"
require "dspy_storage/dspy" # the documentation's names: DSPy::Storage::ProgramStorage, ...
require_relative "support/server"

FIXTURE = File.join(TestServer::REPO, "tests", "fixtures", "dspyrb_chain_of_thought_miprov2.json")
DAY = 86_400

# Each test that ran and passed on the aws backend adds a line to DSPY_STORAGE_AWS_TEST_LOG (when
# set), so the test command can say how many AWS tests ran.
module RecordAwsTests
  def after_teardown
    super
    path = ENV["DSPY_STORAGE_AWS_TEST_LOG"]
    return unless path && ENV["DSPY_STORAGE_TEST_BACKEND"] == "aws" && passed?

    File.open(path, "a") { |f| f.write("ruby-client\t#{self.class}##{name}\taws\n") }
  end
end
Minitest::Test.prepend(RecordAwsTests)

# --- stand-ins for DSPy.rb (no LLM is ever called) ---------------------------------------------

# The documentation's signature (a DSPy::Signature subclass in DSPy.rb).
class ClassifyText
  def self.description
    "Classify the sentiment of a text."
  end
end

# The LLM, stubbed: answers a fixed label and records what it was asked.
class StubLM
  attr_reader :calls

  def initialize(label = "positive")
    @label = label
    @calls = []
  end

  def chat(instruction:, demos:, input:)
    @calls << { instruction: instruction, demos: demos, input: input }
    { sentiment: @label, confidence: 0.9 }
  end
end

# A DSPy.rb predictor stand-in: its state is set by hand (an optimized instruction and demos) and
# it round-trips through to_h / from_h like a DSPy.rb module; #call asks the (stubbed) LM.
class ClassifyTextPredictor
  attr_reader :instruction, :demos
  attr_accessor :lm

  def initialize(instruction:, demos: [], lm: nil)
    @instruction = instruction
    @demos = demos
    @lm = lm
  end

  def signature_class
    ClassifyText
  end

  def to_h
    { class_name: "DSPy::Predict", state: { signature_class: "ClassifyText", instruction: @instruction,
                                            few_shot_examples: @demos } }
  end

  def self.from_h(hash)
    state = hash.fetch(:state)
    new(instruction: state.fetch(:instruction), demos: state.fetch(:few_shot_examples))
  end

  def call(text:)
    (lm || $stub_lm).chat(instruction: @instruction, demos: @demos, input: { text: text })
  end

  def ==(other)
    other.is_a?(ClassifyTextPredictor) && other.instruction == instruction && other.demos == demos
  end
end

$stub_lm = StubLM.new

# DSPy.rb's optimizer, stubbed: "optimizes" without an LLM, answering a result shaped like
# DSPy.rb's (best_predictor, best_score, total_time).
module DSPy
  class MIPROv2
    Result = Struct.new(:best_predictor, :best_score, :total_time, keyword_init: true)

    def initialize(signature:)
      @signature = signature
    end

    def optimize(examples:)
      Result.new(
        best_predictor: ClassifyTextPredictor.new(
          instruction: "Classify the sentiment of the text as positive, negative or neutral. Think step by step.",
          demos: examples.first(3)
        ),
        best_score: 0.91,
        total_time: 12.5
      )
    end
  end
end

def doc_examples(count = 120)
  labels = %w[positive negative neutral]
  Array.new(count) { |i| { text: "example text #{i}", sentiment: labels[i % 3] } }
end

# --- the base of every test ---------------------------------------------------------------------

class StorageTest < Minitest::Test
  # The server of this test class: the shared one unless the class asks for its own store.
  def self.own_server?
    false
  end

  def self.server
    return TestServer.shared unless own_server?

    @server ||= TestServer.new.start
  end

  def server
    self.class.server
  end

  def setup
    DSPyStorage.reset!
    @project = "rb-#{SecureRandom.hex(5)}"
    @cache_dir = Dir.mktmpdir("dspy-storage-rb-cache-")
  end

  def teardown
    DSPyStorage.reset!
    FileUtils.rm_rf(@cache_dir) if @cache_dir
  end

  # A client of this test's server and project (own cache directory unless given).
  def storage(**options)
    DSPyStorage::ProgramStorage.new(url: server.url, project: @project, cache_dir: @cache_dir, **options)
  end

  # The adaptation the issue allows: the default storage configured once, so that the
  # documentation's argument-less constructors run as written.
  def configure_default(**options)
    DSPyStorage.configure(url: server.url, project: @project, cache_dir: @cache_dir, **options)
  end

  def q(params)
    URI.encode_www_form(params)
  end

  def raw_metadata(id)
    server.get("/programs/#{id}/metadata")
  end

  def raw_bytes(id)
    status, headers, body = server.raw(:get, "/programs/#{id}/program")
    assert_equal 200, status, body
    [body, headers]
  end

  # Stores a stand-in predictor created +age+ days ago (the service takes created_at from metadata).
  def store_aged(storage, instruction, age, **metadata)
    metadata[:created_at] = Time.now - age * DAY if age.positive?
    storage.store(program: ClassifyTextPredictor.new(instruction: instruction).to_h, metadata: metadata)
  end

  def store_raw(program, metadata)
    server.json(:post, "/programs", body: { program: program, metadata: { project: @project }.merge(metadata) })
  end

  def iso(time)
    time.utc.iso8601(3)
  end

  def assert_time_equal(expected_rfc3339, actual_time, message = nil)
    assert_kind_of Time, actual_time, message
    assert_in_delta Time.iso8601(expected_rfc3339).to_f, actual_time.to_f, 0.0005, message
  end

  # Runs +block+ with $stderr captured; answers [value, captured].
  def capture_stderr
    old = $stderr
    $stderr = StringIO.new
    value = yield
    [value, $stderr.string]
  ensure
    $stderr = old
  end
end
