# frozen_string_literal: true

# The gem's example: store an optimized DSPy.rb program, point `production` at it, load it at
# inference, track its performance and search. Against a local server:
#   dspy-storage serve &            # http://127.0.0.1:8080
#   ruby -I clients/ruby/lib clients/ruby/examples/quickstart.rb
# (DSPY_STORAGE_URL points it elsewhere.) No LLM is called: the program's state is set by hand,
# as DSPy.rb's `to_h` of an optimized predictor would give it.
require "dspy_storage/dspy"

storage = DSPy::Storage::ProgramStorage.new(url: ENV.fetch("DSPY_STORAGE_URL", "http://127.0.0.1:8080"))
program = {
  class_name: "DSPy::Predict",
  state: { signature_class: "ClassifyText",
           instruction: "Classify the sentiment of the text as positive, negative or neutral.",
           few_shot_examples: [{ text: "I love it", sentiment: "positive" }] }
}
id = storage.store(program: program, metadata: { signature: "ClassifyText", optimization_method: :miprov2,
                                                 performance: 0.91, tags: ["example"] })
version = storage.load(id).version
storage.set_alias("ClassifyText", "production", version)
puts "stored #{id} as ClassifyText v#{version}; production -> v#{version}"

loaded = storage.load_alias("ClassifyText", "production") # cached for cache_ttl, verified
puts "loaded v#{loaded.version} (sha256 #{loaded.sha256[0, 12]}, #{loaded.size} bytes): #{loaded.program[:state][:instruction]}"

DSPy::Storage::PerformanceStorage.new(storage).record_performance(id, { accuracy: 0.92, latency: 0.8 })
trend = DSPy::Storage::PerformanceStorage.new(storage).analyze_performance_trends(id)
puts "accuracy now #{trend[:accuracy][:current]} (#{trend[:accuracy][:trend]})"

hits = DSPy::Storage::ProgramSearch.new(storage).search("signature:ClassifyText method:miprov2 tag:example")
puts "search: #{hits.size} program(s), best #{hits.map { |h| h[:performance] }.compact.max}"
