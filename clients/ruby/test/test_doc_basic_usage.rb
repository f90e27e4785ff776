# frozen_string_literal: true

require_relative "test_helper"

# DSPy.rb "Storage System", section "Basic Usage": both snippets, as on the page, checked against
# the server's raw answers; and the real DSPy.rb saved program of tests/fixtures.
class TestDocBasicUsage < StorageTest
  # Snippet 1, "Storing Optimization Results" (page text, verbatim):
  #
  #   # Run optimization
  #   optimizer = DSPy::MIPROv2.new(signature: ClassifyText)
  #   result = optimizer.optimize(examples: examples)
  #
  #   # Store the result
  #   storage = DSPy::Storage::ProgramStorage.new
  #   storage_id = storage.store(
  #     program: result.best_predictor,
  #     metadata: {
  #       optimization_method: :miprov2,
  #       signature: 'ClassifyText',
  #       version: '1.0.0',
  #       performance: result.best_score,
  #       examples_count: examples.size,
  #       optimization_time: result.total_time
  #     }
  #   )
  #
  #   puts "Stored program with ID: #{storage_id}"
  #
  # Adaptations: "LLM calls stubbed" (DSPy::MIPROv2 is the stub of test_helper.rb: it answers a
  # predictor whose state is set by hand) and "default storage configured once"
  # (DSPyStorage.configure before the argument-less ProgramStorage.new).
  def store_snippet(examples)
    configure_default
    storage = nil
    storage_id = nil
    result = nil
    out, = capture_io do
      # --- the page ---
      optimizer = DSPy::MIPROv2.new(signature: ClassifyText)
      result = optimizer.optimize(examples: examples)

      storage = DSPy::Storage::ProgramStorage.new
      storage_id = storage.store(
        program: result.best_predictor,
        metadata: {
          optimization_method: :miprov2,
          signature: 'ClassifyText',
          version: '1.0.0',
          performance: result.best_score,
          examples_count: examples.size,
          optimization_time: result.total_time
        }
      )

      puts "Stored program with ID: #{storage_id}"
      # --- end of the page ---
    end
    [storage, storage_id, result, out]
  end

  def test_storing_optimization_results
    examples = doc_examples
    storage, storage_id, result, out = store_snippet(examples)

    assert_equal "Stored program with ID: #{storage_id}\n", out
    assert_kind_of DSPy::Storage::ProgramStorage, storage
    assert_same DSPyStorage::ProgramStorage, DSPy::Storage::ProgramStorage
    # The server's record of that id: every metadata value as the snippet gave it.
    record = raw_metadata(storage_id)
    assert_equal "ClassifyText", record["signature"]
    assert_equal "1.0.0", record["version"]
    assert_equal @project, record["project"]
    meta = record["metadata"]
    assert_equal "miprov2", meta["optimization_method"]
    assert_equal 0.91, meta["performance"]
    assert_equal 120, meta["examples_count"]
    assert_equal 12.5, meta["optimization_time"]
    # The stored bytes are the predictor's to_h as JSON, and their hash is the record's.
    bytes, headers = raw_bytes(storage_id)
    assert_equal JSON.generate(result.best_predictor.to_h), bytes
    assert_equal Digest::SHA256.hexdigest(bytes), record["sha256"]
    assert_equal "\"#{record["sha256"]}\"", headers["etag"]
  end

  # Snippet 2, "Loading Programs" (page text, verbatim):
  #
  #   # Load by ID
  #   stored_program = storage.load(storage_id)
  #   predictor = stored_program.program
  #
  #   # Use the loaded predictor
  #   result = predictor.call(text: "Sample text to classify")
  #
  #   # Access metadata
  #   puts "Version: #{stored_program.metadata[:version]}"
  #   puts "Performance: #{stored_program.metadata[:performance]}"
  #
  # Adaptation: "LLM calls stubbed" — `predictor.call(text:)` is the LLM call. `stored_program.program`
  # is the saved Hash (as DSPy.rb's own ProgramStorage answers: no class is looked up from a name in
  # the data), so the stubbed call rebuilds the stand-in module from it and asks the stub LM; the
  # `into:` form below gives the module itself.
  def test_loading_programs
    examples = doc_examples
    storage, storage_id, original, = store_snippet(examples)
    $stub_lm = StubLM.new("neutral")
    result = nil
    out, = capture_io do
      # --- the page ---
      stored_program = storage.load(storage_id)
      predictor = stored_program.program

      result = ClassifyTextPredictor.from_h(predictor).call(text: "Sample text to classify") # LLM stubbed

      puts "Version: #{stored_program.metadata[:version]}"
      puts "Performance: #{stored_program.metadata[:performance]}"
      # --- end of the page ---

      # Checked against the server's answer.
      record = raw_metadata(storage_id)
      bytes, = raw_bytes(storage_id)
      assert_equal JSON.parse(bytes, symbolize_names: true), predictor
      assert_equal bytes, stored_program.bytes
      assert_equal record["sha256"], stored_program.sha256
      assert_equal record["size"], stored_program.size
      assert_equal record["version"], stored_program.metadata[:version]
      assert_equal record["metadata"]["performance"], stored_program.metadata[:performance]
      assert_equal record["metadata"]["examples_count"], stored_program.metadata[:examples_count]
      assert_time_equal record["created_at"], stored_program.metadata[:created_at]
      assert_equal false, stored_program.stale
    end
    assert_equal "Version: 1.0.0\nPerformance: 0.91\n", out
    assert_equal({ sentiment: "neutral", confidence: 0.9 }, result)
    call = $stub_lm.calls.last
    assert_equal original.best_predictor.instruction, call[:instruction]
    assert_equal({ text: "Sample text to classify" }, call[:input])

    # With into: the module itself, rebuilt by into.from_h.
    loaded = storage.load(storage_id, into: ClassifyTextPredictor)
    assert_equal original.best_predictor, loaded.program
    assert_equal({ sentiment: "neutral", confidence: 0.9 }, loaded.program.call(text: "Sample text to classify"))
  end

  # The real DSPy.rb program (a ProgramStorage file of a MIPROv2-optimized ChainOfThought): stored
  # as its file's bytes and as its parsed Hash, loaded back equal, keys in their order, hash checked.
  def test_real_dspy_rb_program_round_trips
    s = storage
    text = File.binread(FIXTURE)
    id = s.store(program: text, metadata: { optimization_method: :miprov2, performance: 1.0 }, import_optimization: true)
    record = raw_metadata(id)
    assert_equal "ManageExtractionConversation", record["signature"], "signature taken from program_data.state.signature_class"
    assert_equal Digest::SHA256.hexdigest(text), record["sha256"], "the file's bytes are stored exactly"
    loaded = s.load(id)
    assert_equal text, loaded.bytes
    assert_equal JSON.parse(text, symbolize_names: true), loaded.program
    assert_equal JSON.parse(text).keys.map(&:to_sym), loaded.program.keys
    assert_equal JSON.parse(text)["optimization_result"].keys.map(&:to_sym), loaded.program[:optimization_result].keys
    assert_equal "DSPy::ChainOfThought", loaded.program.dig(:program_data, :class_name)
    run_id = record["metadata"]["optimization_run_id"]
    run = server.get("/optimization-runs/#{run_id}")
    assert_equal 1.0, run["best_score"]

    # Non-ASCII text in a binary-read program and in the metadata.
    unicode = %({"instruction": "Classez le sentiment \u2192 r\u00e9ponse", "raw": "日本語 ✓"}).b
    id3 = s.store(program: unicode, metadata: { signature: "Unicode", description: "étiquettes ✓" })
    assert_equal unicode, raw_bytes(id3).first.b
    assert_equal "日本語 ✓", s.load(id3).program[:raw]
    assert_equal "étiquettes ✓", raw_metadata(id3)["metadata"]["description"]

    # As DSPy.rb hands it over (a Hash): stored as that Hash's JSON; loads back equal.
    hash = JSON.parse(text, symbolize_names: true)
    id2 = s.store(program: hash, metadata: { signature: "ManageExtractionConversation", version: "2.0.0" })
    bytes, = raw_bytes(id2)
    assert_equal JSON.generate(hash), bytes
    assert_equal hash, s.load(id2).program
    assert_equal hash, s.load_version("ManageExtractionConversation", "latest").program
  end
end
