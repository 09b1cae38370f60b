// The SOAP backend of soap_ab.sh: answers every POST with a getQuoteResponse for the symbol it
// was sent (read with a regular expression: the backend must not be what is measured).
const http = require('http');
const port = Number(process.env.PORT || 18300);
const head = '<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">' +
  '<soap:Body><q:getQuoteResponse xmlns:q="http://example.com/stockquote"><q:symbol>';
const tail = '</q:symbol><q:name>International Business Machines</q:name><q:price>142.5</q:price>' +
  '<q:qty>1200</q:qty></q:getQuoteResponse></soap:Body></soap:Envelope>';
const symbolRe = /<(?:\w+:)?symbol>([^<]*)</;
http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const m = symbolRe.exec(Buffer.concat(chunks).toString('utf8'));
    const body = Buffer.from(head + (m ? m[1] : '') + tail);
    res.writeHead(200, { 'content-type': 'text/xml; charset=utf-8', 'content-length': body.length });
    res.end(body);
  });
}).listen(port, '127.0.0.1');
